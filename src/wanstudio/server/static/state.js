// The page's shared state, and the status sets that decide queue or gallery.

export const KEY_STORAGE = "wanstudio.apiKey";
export const ACTIVE = new Set(["queued", "in_progress"]);
export const FINISHED = new Set(["completed", "failed", "cancelled"]);

export const state = {
  apiKey: readStoredKey(),
  needsKey: false,
  models: [],
  modelId: null,
  variantName: null,
  videos: new Map(), // id -> latest video object
  cards: new Map(), // id -> {el, refs, shown, blobUrl, mediaFor}
  gone: new Set(), // ids deleted from this page: late events must not bring them back
  seen: new Map(), // id -> order in which this page learnt of it (created_at has whole seconds only)
  asOf: new Map(), // id -> when the data shown was asked for (performance.now()), to drop stale answers
  downloads: new Map(), // "model|variant" -> latest model.download.* data (null until the first event)
  downloadStarted: new Map(), // "model|variant" -> when this page first saw it running
  downloadErrors: new Map(),
  socket: null,
  socketOpen: false,
  reconnectAttempts: 0,
  reconnectTimer: null,
  pollTimer: null,
  pollTicks: 0,
  modelsRefresh: null,
  imageUrl: null,
  loras: null, // the LoRA catalogue (GET /v1/loras); null until loaded
  lorasError: null,
  chosenLoras: [], // [{name, weight, weight_2}] for the next job
  hardware: null, // /readyz `hardware`: gpus, ram_bytes, cpu_count, notes
  devices: [], // /readyz `devices`: where the workers run
};

function readStoredKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}
