// The wanstudio web UI: a client of the same HTTP API as every other (CONTRACT section 8), no build step.
//
// Data flow: models come from GET /v1/models, videos from GET /v1/videos; from then on the WebSocket
// GET /v1/events pushes every change (video.*, model.download.*). While the socket is down the page
// polls the jobs it is waiting on and reconnects with exponential backoff. Every piece of server data
// reaches the page through textContent or attributes, never as HTML.

const KEY_STORAGE = "wanstudio.apiKey";
const LIST_LIMIT = 50;
const POLL_MS = 1000;
const FULL_REFRESH_EVERY = 5; // polls: the whole list (and models) every fifth tick while the socket is down
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const ACTIVE = new Set(["queued", "in_progress"]);
const FINISHED = new Set(["completed", "failed", "cancelled"]);

const STAGES = {
  queued: "waiting in the queue",
  ensuring: "fetching the model",
  loading: "loading the model",
  denoising: "denoising",
  decoding: "decoding frames",
  encoding: "encoding the MP4",
  done: "done",
};

const VARIANT_STATES = {
  complete: "on disk",
  partial: "partly downloaded",
  missing: "not downloaded",
  corrupt: "damaged",
  downloading: "downloading",
};

// Error `param`s (API field names, and the engine's names for the same things) -> the form field to mark.
const PARAM_FIELDS = {
  model: "model",
  variant: "variant",
  prompt: "prompt",
  negative_prompt: "negative_prompt",
  size: "size",
  width: "size",
  height: "size",
  seconds: "num_frames",
  num_frames: "num_frames",
  frames: "num_frames",
  num_inference_steps: "steps",
  steps: "steps",
  guidance_scale: "guidance_scale",
  fps: "fps",
  seed: "seed",
  input_reference: "image",
  image: "image",
};
// Form field -> the inputs to mark invalid.
const FIELD_INPUTS = {
  model: ["model"],
  variant: [],
  prompt: ["prompt"],
  negative_prompt: ["negative_prompt"],
  size: ["width", "height"],
  num_frames: ["num_frames"],
  steps: ["steps"],
  guidance_scale: ["guidance_scale"],
  fps: ["fps"],
  seed: ["seed"],
  image: ["image"],
};

const $ = (id) => document.getElementById(id);

const state = {
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
};

// ---------------------------------------------------------------------------------------------- helpers

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.code = error.code || (status ? `HTTP ${status}` : "NETWORK");
    this.param = error.param || null;
    this.suggestions = Array.isArray(error.suggestions) ? error.suggestions : [];
  }
}

function readStoredKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function authHeaders() {
  return state.apiKey ? { Authorization: `Bearer ${state.apiKey}` } : {};
}

async function api(path, { method, json, form } = {}) {
  const init = {
    method: method || (json !== undefined || form ? "POST" : "GET"),
    headers: { Accept: "application/json", ...authHeaders() },
  };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form; // the browser sets multipart/form-data with its boundary
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (cause) {
    setConnection("offline");
    const error = new ApiError(0, {
      error: {
        code: "NETWORK",
        message: `cannot reach the server (${cause.message || cause})`,
        suggestions: ["check that wan serve is still running, then try again"],
      },
    });
    throw error;
  }
  let body = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      body = await response.json();
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, body);
    if (response.status === 401 || error.code === "UNAUTHORIZED") askForKey(error);
    throw error;
  }
  if (state.connection === "offline") setConnection(state.socketOpen ? "live" : "polling");
  return body;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function formatBytes(bytes) {
  if (bytes == null) return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  if (seconds < 1) return "under a second";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function formatNumber(value) {
  return Number(value).toLocaleString("en-US");
}

function shortName(modelId) {
  return String(modelId || "").split("@")[0];
}

function announce(text) {
  const region = $("announcer");
  region.textContent = "";
  // a fresh text node in a later task, so screen readers announce a repeated message too
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

function notify(message, { suggestions = [], kind = "error", timeout = kind === "error" ? 0 : 6000 } = {}) {
  const role = kind === "error" ? "alert" : "status";
  const box = el("div", { class: `notice ${kind}`, role, "data-testid": "notice" });
  const close = el("button", { type: "button", class: "notice-close", "aria-label": "Dismiss", text: "×" });
  close.addEventListener("click", () => box.remove());
  box.append(el("p", { text: message }));
  if (suggestions.length) {
    const list = el("ul", { class: "suggestions" });
    for (const item of suggestions) list.append(el("li", { text: item }));
    box.append(list);
  }
  box.append(close);
  $("notices").append(box);
  if (timeout) setTimeout(() => box.remove(), timeout);
}

function notifyError(prefix, error) {
  notify(`${prefix}: ${error.message}`, { suggestions: error.suggestions || [] });
}

// ---------------------------------------------------------------------------------------------- API key

function askForKey(error) {
  state.needsKey = true;
  if (!state.socketOpen) setConnection("locked");
  const panel = $("api-key-panel");
  const wasHidden = panel.hidden;
  panel.hidden = false;
  $("api-key-toggle").setAttribute("aria-expanded", "true");
  $("api-key-message").textContent = state.apiKey
    ? `The saved API key was refused (${error.message}). Enter a valid key.`
    : "This server needs an API key. It is kept in this browser only (localStorage) and sent as an " +
      "Authorization: Bearer header.";
  if (wasHidden) $("api-key").focus();
}

function setupApiKey() {
  const panel = $("api-key-panel");
  const toggle = $("api-key-toggle");
  toggle.addEventListener("click", () => {
    panel.hidden = !panel.hidden;
    toggle.setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) $("api-key").focus();
  });
  $("api-key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    saveKey(key);
  });
  $("api-key-forget").addEventListener("click", () => saveKey(""));
  $("api-key").value = state.apiKey;
}

function saveKey(key) {
  state.apiKey = key;
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* private mode: the key lasts for this page */
  }
  state.needsKey = false;
  if (key) {
    $("api-key-panel").hidden = true;
    $("api-key-toggle").setAttribute("aria-expanded", "false");
  }
  $("api-key").value = key;
  announce(key ? "API key saved" : "API key forgotten");
  reconnectNow();
  loadModels();
  loadVideos();
  for (const [id, card] of state.cards) {
    card.mediaFor = null; // refetch the videos with the new key
    renderCard(state.videos.get(id));
  }
}

// ---------------------------------------------------------------------------------------------- models

function currentModel() {
  return state.models.find((m) => m.id === state.modelId) || null;
}

function currentVariant() {
  const model = currentModel();
  return model ? model.variants.find((v) => v.name === state.variantName) || null : null;
}

function variantDefaults(model, variant) {
  return (variant && variant.defaults) || (model && model.engine && model.engine.defaults) || {};
}

async function loadModels() {
  let body;
  try {
    body = await api("/v1/models");
  } catch (error) {
    $("model-summary").textContent = error.status === 401
      ? "Enter the server's API key (above) to see its models."
      : `Could not load the models: ${error.message}`;
    return;
  }
  const first = state.models.length === 0;
  state.models = (body && body.data) || [];
  for (const model of state.models) {
    for (const variant of model.variants) {
      const key = `${model.id}|${variant.name}`;
      if (variant.download && !state.downloads.get(key)) {
        state.downloads.set(key, variant.download);
        state.downloadStarted.set(key, Date.now());
      }
    }
  }
  renderModelSelect();
  if (first || !currentModel()) {
    const preferred = state.models.find((m) => m.name === "ti2v-5B") || state.models[0];
    if (preferred) selectModel(preferred.id);
  } else {
    renderModel();
  }
}

function scheduleModelsRefresh() {
  clearTimeout(state.modelsRefresh);
  state.modelsRefresh = setTimeout(loadModels, 150);
}

function renderModelSelect() {
  const select = $("model");
  const keep = state.modelId;
  select.replaceChildren();
  for (const model of state.models) {
    const onDisk = model.variants.filter((v) => v.state === "complete").length;
    const caps = (model.engine && model.engine.capabilities) || [];
    const label = `${model.name} — ${caps.join(", ") || model.task}${onDisk ? "" : " (not downloaded)"}`;
    select.append(el("option", { value: model.id, text: label }));
  }
  if (keep) select.value = keep;
}

function selectModel(modelId, variantName) {
  const model = state.models.find((m) => m.id === modelId || m.name === modelId);
  if (!model) return;
  state.modelId = model.id;
  $("model").value = model.id;
  const names = model.variants.map((v) => v.name);
  if (names.includes(variantName)) state.variantName = variantName;
  else {
    // the default variant, unless it is not on disk and another one is
    const byName = (name) => model.variants.find((v) => v.name === name);
    const onDisk = model.variants.find((v) => v.state === "complete");
    const preferred = byName(model.default_variant);
    const usable = preferred && (preferred.state === "complete" || !onDisk);
    const chosen = usable ? preferred : onDisk || model.variants[0];
    state.variantName = chosen ? chosen.name : null;
  }
  renderModel();
  applyDefaults();
}

function selectVariant(name) {
  state.variantName = name;
  renderVariants();
  applyDefaults();
}

function renderModel() {
  const model = currentModel();
  if (!model) return;
  const engine = model.engine || {};
  $("model-summary").textContent = engine.error
    ? `This model cannot run here: ${engine.error.message}`
    : engine.summary || model.description || "";
  const chips = $("model-chips");
  chips.replaceChildren();
  for (const cap of engine.capabilities || []) chips.append(el("li", { class: "chip accent", text: cap }));
  const image = (engine.inputs && engine.inputs.image) || "none";
  chips.append(el("li", { class: "chip", text: image === "none" ? "no image input" : `image ${image}` }));
  if (engine.experts) {
    const experts = `${engine.experts} expert${engine.experts > 1 ? "s" : ""}`;
    chips.append(el("li", { class: "chip", text: experts }));
  }
  if (model.version) chips.append(el("li", { class: "chip muted", text: `v${model.version}` }));
  renderVariants();
  renderLimits();
  renderImageField();
  $("submit").disabled = Boolean(engine.error);
}

function variantStatus(model, variant) {
  const key = `${model.id}|${variant.name}`;
  if (state.downloads.has(key)) return "downloading";
  return variant.state || "missing";
}

function renderVariants() {
  const model = currentModel();
  const list = $("variant-list");
  if (!model) return;
  const active = document.activeElement;
  const focused = active && active.closest ? active.closest(".variant-row") : null;
  const focusName = focused ? focused.dataset.variant : null;
  const focusDownload = focused && active.dataset.testid === "download-variant";
  list.replaceChildren();
  for (const variant of model.variants) {
    const status = variantStatus(model, variant);
    const id = `variant-${variant.name}`;
    const input = el("input", { type: "radio", name: "variant", id, value: variant.name });
    input.checked = variant.name === state.variantName;
    input.addEventListener("change", () => selectVariant(variant.name));
    const details = [variant.dtype, variant.bytes != null ? formatBytes(variant.bytes) : "size from the Hub"];
    const label = el(
      "label",
      { for: id, class: "variant-label" },
      el("span", { class: "variant-name", text: variant.name }),
      variant.name === model.default_variant ? el("span", { class: "tag", text: "default" }) : null,
      el("span", { class: "variant-details", text: details.filter(Boolean).join(" · ") }),
    );
    const badge = el("span", {
      class: `badge state-${status}`,
      "data-testid": "variant-state",
      text: VARIANT_STATES[status] || status,
    });
    const row = el("div", {
      class: `variant-row${variant.name === state.variantName ? " selected" : ""}`,
      "data-testid": `variant-${variant.name}`,
      dataset: { variant: variant.name, state: status },
    }, input, label, badge);
    if (status !== "complete" && status !== "downloading") {
      const text = status === "partial" ? "Resume" : status === "corrupt" ? "Repair" : "Download";
      row.append(el("button", {
        type: "button",
        class: "ghost small",
        "data-testid": "download-variant",
        "aria-label": `${text} ${model.name} ${variant.name}`,
        text,
        onclick: () => startDownload(model, variant),
      }));
    }
    const key = `${model.id}|${variant.name}`;
    if (status === "downloading") row.append(downloadProgress(state.downloads.get(key)));
    const failure = state.downloadErrors.get(key);
    if (failure && status !== "downloading" && status !== "complete") {
      row.append(el("p", { class: "variant-error", role: "alert", text: `Download failed: ${failure}` }));
    }
    list.append(row);
  }
  if (focusName) {
    const row = list.querySelector(`[data-variant="${CSS.escape(focusName)}"]`);
    const target = row && (focusDownload ? row.querySelector("button") : row.querySelector("input"));
    if (target) target.focus();
  }
  updateSubmitHint();
}

function downloadProgress(data) {
  const done = data ? data.bytes_done || 0 : 0;
  const total = data ? data.bytes_total || 0 : 0;
  const percent = total ? Math.min(100, Math.floor((done / total) * 100)) : 0;
  const parts = [];
  if (total) parts.push(`${percent}% · ${formatBytes(done)} of ${formatBytes(total)}`);
  else parts.push("starting…");
  if (data && data.files_total) {
    parts.push(`file ${Math.min(data.files_done + 1, data.files_total)} of ${data.files_total}`);
  }
  if (data && data.rate_bytes_per_second) parts.push(`${formatBytes(data.rate_bytes_per_second)}/s`);
  if (data && data.eta_seconds != null) parts.push(`${formatDuration(data.eta_seconds)} left`);
  const bar = progressBar(percent, `download ${percent}%`);
  bar.dataset.testid = "download-progress";
  return el("div", { class: "variant-download" }, bar, el("p", { class: "hint", text: parts.join(" · ") }));
}

async function startDownload(model, variant) {
  const key = `${model.id}|${variant.name}`;
  state.downloadErrors.delete(key);
  state.downloads.set(key, null);
  state.downloadStarted.set(key, Date.now());
  renderVariants();
  try {
    const path = `/v1/models/${encodeURIComponent(model.id)}/ensure`;
    const answer = await api(path, { json: { variant: variant.name } });
    if (answer && answer.status === "complete") {
      state.downloads.delete(key);
      scheduleModelsRefresh();
    } else if (answer && answer.progress && !state.downloads.get(key)) {
      state.downloads.set(key, answer.progress);
    }
    announce(`Downloading ${model.name} ${variant.name}`);
  } catch (error) {
    state.downloads.delete(key);
    state.downloadErrors.set(key, error.message);
    notifyError(`Could not download ${model.name} ${variant.name}`, error);
  }
  renderVariants();
}

function renderLimits() {
  const model = currentModel();
  const limits = (model && model.engine && model.engine.limits) || {};
  const setRange = (id, min, max, step) => {
    const input = $(id);
    for (const [name, value] of [["min", min], ["max", max], ["step", step]]) {
      if (value == null) input.removeAttribute(name);
      else input.setAttribute(name, String(value));
    }
  };
  setRange("width", limits.min_side, limits.max_side, limits.size_multiple);
  setRange("height", limits.min_side, limits.max_side, limits.size_multiple);
  setRange("num_frames", limits.min_frames, limits.max_frames, limits.frame_multiple);
  setRange("steps", 1, limits.max_steps, 1);
  setRange("guidance_scale", 0, limits.max_guidance, 0.1);
  setRange("fps", limits.min_fps, limits.max_fps, 1);
  $("steps-hint").textContent = limits.max_steps ? `1 to ${limits.max_steps}; more is slower` : "";
  $("guidance_scale-hint").textContent = limits.max_guidance != null ? `0 to ${limits.max_guidance}` : "";
  $("fps-hint").textContent = limits.min_fps != null ? `${limits.min_fps} to ${limits.max_fps}` : "";
  if (limits.max_prompt_chars) $("prompt").setAttribute("maxlength", String(limits.max_prompt_chars));
  const presets = $("size-presets");
  presets.replaceChildren();
  for (const size of (model && model.engine && model.engine.trained_sizes) || []) {
    const [w, h] = size.split("x");
    presets.append(el("button", {
      type: "button",
      class: "preset",
      "aria-label": `Use the trained size ${size}`,
      text: size.replace("x", " × "),
      onclick: () => {
        $("width").value = w;
        $("height").value = h;
        updateHints();
        clearFieldError("size");
      },
    }));
  }
  if (presets.children.length) presets.prepend(el("span", { class: "presets-label", text: "Trained at" }));
  updateHints();
}

function updateHints() {
  const model = currentModel();
  const limits = (model && model.engine && model.engine.limits) || {};
  const w = Number($("width").value);
  const h = Number($("height").value);
  const sizeParts = [];
  if (limits.size_multiple) sizeParts.push(`multiples of ${limits.size_multiple}`);
  if (limits.min_side) sizeParts.push(`${limits.min_side}–${limits.max_side} px a side`);
  if (limits.max_pixels) sizeParts.push(`at most ${formatNumber(limits.max_pixels)} pixels`);
  if (w && h) sizeParts.push(`now ${formatNumber(w * h)}`);
  $("size-hint").textContent = sizeParts.join(" · ");
  const frames = Number($("num_frames").value);
  const fps = Number($("fps").value);
  const frameParts = [];
  if (limits.frame_multiple) {
    frameParts.push(`${limits.frame_multiple}n+1, ${limits.min_frames}–${limits.max_frames}`);
  }
  if (frames && fps) frameParts.push(`${((frames - 1) / fps).toFixed(2)} s`);
  $("num_frames-hint").textContent = frameParts.join(" · ");
  const max = limits.max_prompt_chars;
  const length = $("prompt").value.length;
  $("prompt-count").textContent = max ? `${formatNumber(length)} / ${formatNumber(max)}` : "";
}

function renderImageField() {
  const model = currentModel();
  const mode = (model && model.engine && model.engine.inputs && model.engine.inputs.image) || "none";
  const field = $("image-field");
  field.hidden = mode === "none";
  field.dataset.mode = mode;
  $("image-tag").textContent = mode === "required" ? "required" : "optional";
  $("image-tag").classList.toggle("required", mode === "required");
  $("image").required = mode === "required";
  $("image-hint").textContent = mode === "required"
    ? "PNG, JPEG or WebP: the model animates this image."
    : "PNG, JPEG or WebP, optional: leave it out for text-to-video, or give a first frame.";
}

function applyDefaults() {
  const model = currentModel();
  const variant = currentVariant();
  if (!model) return;
  const d = variantDefaults(model, variant);
  const set = (id, value) => {
    $(id).value = value == null ? "" : String(value);
  };
  set("width", d.width);
  set("height", d.height);
  set("num_frames", d.num_frames);
  set("fps", d.fps);
  set("steps", d.steps);
  set("guidance_scale", d.guidance_scale);
  set("negative_prompt", d.negative_prompt);
  set("seed", "");
  $("params-source").textContent = `defaults of ${model.name} · ${state.variantName}`;
  clearErrors();
  updateHints();
}

function updateSubmitHint() {
  const model = currentModel();
  const variant = currentVariant();
  let text = "";
  if (model && variant) {
    const status = variantStatus(model, variant);
    if (status === "downloading") text = `${variant.name} is downloading; a job waits for it.`;
    else if (status !== "complete") {
      const size = variant.bytes != null ? ` (${formatBytes(variant.bytes)})` : "";
      text = `${model.name} ${variant.name} is not on disk: the job downloads it first${size}.`;
    }
  }
  $("submit-hint").textContent = text;
}

// ---------------------------------------------------------------------------------------------- the form

function setupForm() {
  $("model").addEventListener("change", (event) => selectModel(event.target.value));
  $("create-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  $("reset-defaults").addEventListener("click", applyDefaults);
  for (const id of ["width", "height", "num_frames", "fps", "prompt"]) {
    $(id).addEventListener("input", updateHints);
  }
  for (const [field, inputs] of Object.entries(FIELD_INPUTS)) {
    for (const id of inputs) $(id).addEventListener("input", () => clearFieldError(field));
  }
  $("image").addEventListener("change", () => {
    clearFieldError("image");
    const file = $("image").files[0];
    if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
    state.imageUrl = file ? URL.createObjectURL(file) : null;
    $("image-preview").hidden = !file;
    $("image-clear").hidden = !file;
    if (file) {
      $("image-preview").src = state.imageUrl;
      $("image-preview").alt = `Preview of ${file.name}`;
    } else {
      $("image-preview").removeAttribute("src");
    }
  });
  $("image-clear").addEventListener("click", () => {
    $("image").value = "";
    $("image").dispatchEvent(new Event("change"));
  });
}

function buildForm() {
  const model = currentModel();
  const data = new FormData();
  const add = (name, value) => {
    const text = value == null ? "" : String(value).trim();
    if (text !== "") data.append(name, text);
  };
  add("model", model ? model.id : "");
  add("variant", state.variantName);
  add("prompt", $("prompt").value);
  add("negative_prompt", $("negative_prompt").value);
  const w = $("width").value.trim();
  const h = $("height").value.trim();
  if (w || h) add("size", `${w}x${h}`);
  add("num_frames", $("num_frames").value);
  add("num_inference_steps", $("steps").value);
  add("guidance_scale", $("guidance_scale").value);
  add("fps", $("fps").value);
  add("seed", $("seed").value);
  const file = $("image").files[0];
  const mode = (model && model.engine && model.engine.inputs && model.engine.inputs.image) || "none";
  if (file && mode !== "none") data.append("input_reference", file, file.name);
  return data;
}

async function submit() {
  clearErrors();
  const button = $("submit");
  button.disabled = true;
  button.textContent = "Submitting…";
  try {
    const asked = performance.now();
    const video = await api("/v1/videos", { method: "POST", form: buildForm() });
    upsertVideo(video, asked);
    announce(`Queued: ${video.prompt}`);
    const card = state.cards.get(video.id);
    if (card) card.el.scrollIntoView({ block: "nearest", behavior: "smooth" });
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = Boolean(currentModel() && currentModel().engine && currentModel().engine.error);
    button.textContent = "Generate";
  }
}

function showError(error) {
  const box = $("form-error");
  box.querySelector(".code").textContent = error.code;
  box.querySelector(".message").textContent = error.message;
  const list = box.querySelector(".suggestions");
  list.replaceChildren();
  for (const item of error.suggestions || []) list.append(el("li", { text: item }));
  list.hidden = !(error.suggestions || []).length;
  box.hidden = false;
  const field = PARAM_FIELDS[error.param];
  box.dataset.param = error.param || "";
  box.dataset.field = field || "";
  if (field) markField(field, error.message);
}

function markField(field, message) {
  const inputs = FIELD_INPUTS[field] || [];
  const errorBox = $(`${field}-error`);
  if (field === "variant") $("variant-field").classList.add("invalid");
  for (const id of inputs) {
    const input = $(id);
    input.setAttribute("aria-invalid", "true");
    input.classList.add("invalid");
    if (errorBox) {
      const described = (input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
      if (!described.includes(errorBox.id)) {
        input.setAttribute("aria-describedby", [...described, errorBox.id].join(" "));
      }
    }
  }
  if (errorBox) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }
  if (field === "negative_prompt") $("negative-details").open = true;
  const first = inputs.length ? $(inputs[0]) : null;
  if (first && !first.closest("[hidden]")) first.focus({ preventScroll: false });
}

function clearFieldError(field) {
  for (const id of FIELD_INPUTS[field] || []) {
    const input = $(id);
    input.removeAttribute("aria-invalid");
    input.classList.remove("invalid");
  }
  if (field === "variant") $("variant-field").classList.remove("invalid");
  const errorBox = $(`${field}-error`);
  if (errorBox) {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }
  if ($("form-error").dataset.field === field) $("form-error").hidden = true;
}

function clearErrors() {
  for (const field of Object.keys(FIELD_INPUTS)) clearFieldError(field);
  $("form-error").hidden = true;
}

function reuseSettings(video) {
  const p = video.parameters || {};
  selectModel(video.model, video.variant);
  const set = (id, value) => {
    if (value != null) $(id).value = String(value);
  };
  $("prompt").value = video.prompt || "";
  set("width", p.width);
  set("height", p.height);
  set("num_frames", p.num_frames);
  set("fps", p.fps);
  set("steps", p.steps);
  set("guidance_scale", p.guidance_scale);
  set("seed", p.seed);
  set("negative_prompt", p.negative_prompt);
  $("params-source").textContent = `settings of ${video.id}`;
  updateHints();
  $("prompt").focus();
  announce("The form now holds that video's settings, its seed included");
}

// ---------------------------------------------------------------------------------------------- videos

async function loadVideos() {
  let body;
  const asked = performance.now();
  try {
    body = await api(`/v1/videos?limit=${LIST_LIMIT}`);
  } catch (error) {
    if (error.status !== 401 && error.status !== 0) notifyError("Could not load the videos", error);
    return;
  }
  const data = (body && body.data) || [];
  const seen = new Set(data.map((v) => v.id));
  const oldest = data.length ? Math.min(...data.map((v) => v.created_at)) : Infinity;
  for (const [id, video] of state.videos) {
    // gone from the server (deleted elsewhere, or expired): within the page the list covers
    if (!seen.has(id) && (!body.has_more || video.created_at >= oldest)) removeCard(id);
  }
  for (const video of [...data].reverse()) upsertVideo(video, asked); // oldest first: see `seen`
  updateEmpty();
}

function rank(status) {
  return status === "queued" ? 0 : status === "in_progress" ? 1 : 2;
}

// `asOf`: when the object was asked for. An answer asked for before the last update shown (a list or a
// poll that crossed an event) is older than what the page shows, and is dropped.
function upsertVideo(video, asOf = performance.now()) {
  if (!video || !video.id || state.gone.has(video.id)) return;
  if ((state.asOf.get(video.id) ?? -Infinity) > asOf) return;
  const previous = state.videos.get(video.id);
  // A terminal state is final, whatever arrives late.
  if (previous && rank(previous.status) === 2 && rank(video.status) < 2) return;
  state.asOf.set(video.id, asOf);
  state.videos.set(video.id, video);
  if (!state.seen.has(video.id)) state.seen.set(video.id, state.seen.size);
  renderCard(video, previous);
  if (previous && previous.status !== video.status) {
    const words = {
      in_progress: "started", completed: "finished", failed: "failed", cancelled: "was cancelled",
    };
    if (words[video.status]) announce(`Video "${video.prompt}" ${words[video.status]}`);
  } else if (previous && video.status === "in_progress" && previous.stage !== video.stage) {
    // each stage once, not every step
    if (STAGES[video.stage]) announce(`Video "${video.prompt}": ${STAGES[video.stage]}`);
  }
  if (video.status === "completed" && (!previous || previous.status !== "completed")) scheduleModelsRefresh();
  updatePolling();
}

function renderCard(video, previous) {
  if (!video) return;
  let card = state.cards.get(video.id);
  if (!card) {
    card = createCard(video);
    state.cards.set(video.id, card);
  }
  const { refs } = card;
  card.el.dataset.status = video.status;
  refs.badge.textContent = video.status.replace("_", " ");
  refs.badge.className = `badge status-${video.status}`;
  refs.prompt.textContent = video.prompt;
  refs.prompt.title = video.prompt;
  const p = video.parameters || {};
  const meta = [
    `${shortName(video.model)} · ${video.variant}`,
    video.size ? video.size.replace("x", "×") : null,
    p.num_frames ? `${p.num_frames} frames (${video.seconds} s @ ${p.fps} fps)` : `${video.seconds} s`,
    video.total_steps ? `${video.total_steps} steps` : null,
    p.seed != null ? `seed ${p.seed}` : null,
  ];
  refs.meta.textContent = meta.filter(Boolean).join(" · ");
  const created = new Date(video.created_at * 1000);
  refs.time.textContent = created.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  refs.time.dateTime = created.toISOString();

  // progress: never backwards while the job runs (an event and a poll may arrive out of order)
  let shown = card.shown;
  if (video.status === "queued") shown = 0;
  else if (video.status === "completed") shown = 100;
  else if (video.status === "in_progress") {
    shown = Math.max(card.shown, Math.min(100, Math.max(0, video.progress || 0)));
  }
  card.shown = shown;
  const stage = stageText(video, shown);
  refs.stage.textContent = stage;
  setProgress(refs.progress, shown, stage);
  refs.progress.hidden = FINISHED.has(video.status);
  refs.progress.classList.toggle("indeterminate", video.status === "in_progress" && shown === 0);

  // error and warnings
  refs.error.replaceChildren();
  refs.error.hidden = !(video.status === "failed" && video.error);
  if (video.status === "failed" && video.error) {
    const code = el("strong", { text: video.error.code || "FAILED" });
    refs.error.append(el("p", {}, code, ` ${video.error.message || ""}`));
    if (video.error.suggestions && video.error.suggestions.length) {
      const list = el("ul", { class: "suggestions" });
      for (const s of video.error.suggestions) list.append(el("li", { text: s }));
      refs.error.append(list);
    }
  }
  refs.warnings.replaceChildren();
  for (const w of video.warnings || []) refs.warnings.append(el("li", { text: w }));
  refs.warnings.hidden = !(video.warnings || []).length;

  // actions
  refs.cancel.hidden = !ACTIVE.has(video.status);
  refs.remove.hidden = !FINISHED.has(video.status);
  refs.download.hidden = video.status !== "completed";

  renderMedia(card, video);
  placeCard(card, video);
  if (!previous || previous.status !== video.status) updateEmpty();
}

function stageText(video, percent = video.progress || 0) {
  if (video.status === "queued") {
    const position = queuePosition(video);
    return position > 1 ? `waiting · ${ordinal(position)} in line` : "waiting · next in line";
  }
  if (video.status === "in_progress") {
    const stage = video.stage || "loading";
    const parts = [STAGES[stage] || stage];
    if (stage === "denoising" && video.total_steps) {
      parts.push(`step ${video.step || 0}/${video.total_steps}`);
    }
    if (stage === "ensuring" && video.download) {
      const d = video.download;
      if (d.bytes_total) {
        parts.push(`${Math.floor((d.bytes_done / d.bytes_total) * 100)}% of ${formatBytes(d.bytes_total)}`);
      }
    }
    parts.push(`${Math.round(percent)}%`);
    if (video.eta_seconds != null) parts.push(`about ${formatDuration(video.eta_seconds)} left`);
    return parts.join(" · ");
  }
  if (video.status === "completed") {
    const m = video.metrics || {};
    const parts = ["done"];
    if (m.elapsed_seconds != null) parts.push(`in ${formatDuration(m.elapsed_seconds)}`);
    if (m.peak_vram_bytes) parts.push(`peak VRAM ${formatBytes(m.peak_vram_bytes)}`);
    else if (m.peak_rss_bytes) parts.push(`peak memory ${formatBytes(m.peak_rss_bytes)}`);
    return parts.join(" · ");
  }
  if (video.status === "cancelled") return `cancelled at ${Math.round(video.progress || 0)}%`;
  return "failed";
}

function ordinal(n) {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  return `${n}${teen ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th"}`;
}

function queuePosition(video) {
  const queued = [...state.videos.values()].filter((v) => v.status === "queued").sort(byOldest);
  return queued.findIndex((v) => v.id === video.id) + 1;
}

function progressBar(value, text) {
  const bar = el("div", {
    class: "progress",
    role: "progressbar",
    "aria-valuemin": 0,
    "aria-valuemax": 100,
  }, el("div", { class: "progress-fill" }));
  setProgress(bar, value, text);
  return bar;
}

function setProgress(bar, value, text) {
  const rounded = Math.round(value);
  if (bar.getAttribute("aria-valuenow") !== String(rounded)) {
    bar.setAttribute("aria-valuenow", String(rounded));
  }
  bar.setAttribute("aria-valuetext", text || `${rounded}%`);
  bar.firstChild.style.width = `${value}%`;
}

function createCard(video) {
  const refs = {};
  refs.media = el("div", { class: "media" });
  refs.badge = el("span", { class: "badge", "data-testid": "status" });
  refs.time = el("time", { class: "time" });
  refs.prompt = el("p", { class: "prompt", "data-testid": "prompt" });
  refs.meta = el("p", { class: "meta" });
  refs.progress = progressBar(0, "");
  refs.progress.dataset.testid = "progress";
  refs.progress.setAttribute("aria-label", "Progress");
  refs.stage = el("p", { class: "stage", "data-testid": "stage" });
  refs.error = el("div", { class: "card-error", "data-testid": "video-error" });
  refs.warnings = el("ul", { class: "warnings", "aria-label": "Warnings" });
  refs.cancel = el("button", {
    type: "button", class: "ghost small danger", "data-testid": "cancel", text: "Cancel",
    "aria-label": `Cancel the video ${video.id}`,
    onclick: () => cancelVideo(video.id),
  });
  refs.remove = el("button", {
    type: "button", class: "ghost small danger", "data-testid": "delete", text: "Delete",
    "aria-label": `Delete the video ${video.id}`,
    onclick: () => deleteVideo(video.id),
  });
  refs.reuse = el("button", {
    type: "button", class: "ghost small", "data-testid": "reuse", text: "Reuse",
    title: "Fill the form with this video's settings",
    onclick: () => reuseSettings(state.videos.get(video.id)),
  });
  refs.download = el("a", {
    class: "button ghost small", "data-testid": "download", text: "MP4", download: `${video.id}.mp4`,
  });
  const body = el(
    "div",
    { class: "card-body" },
    el("div", { class: "card-head" }, refs.badge, refs.time),
    refs.prompt,
    refs.meta,
    refs.progress,
    refs.stage,
    refs.error,
    refs.warnings,
    el("div", { class: "card-actions" }, refs.cancel, refs.remove, refs.download, refs.reuse),
  );
  const node = el("li", {
    class: "card",
    "data-testid": "video-card",
    dataset: { id: video.id },
    "aria-label": `Video: ${video.prompt}`,
  }, refs.media, body);
  return { el: node, refs, shown: 0, blobUrl: null, mediaFor: null };
}

function renderMedia(card, video) {
  const { media } = card.refs;
  if (video.status !== "completed") {
    if (card.mediaFor !== video.status) {
      card.mediaFor = video.status;
      const glyph = { queued: "…", in_progress: "", failed: "!", cancelled: "×" }[video.status] || "";
      media.replaceChildren(
        el("div", { class: `placeholder ${video.status}`, "aria-hidden": "true", text: glyph }),
      );
    }
    return;
  }
  const wanted = `completed|${state.apiKey}`;
  if (card.mediaFor === wanted) return;
  card.mediaFor = wanted;
  const url = `/v1/videos/${encodeURIComponent(video.id)}/content`;
  const player = el("video", {
    controls: true,
    playsinline: true,
    loop: true,
    muted: true,
    preload: "metadata",
    "data-testid": "video",
    "aria-label": `Video: ${video.prompt}`,
  });
  player.muted = true;
  media.replaceChildren(player);
  if (!state.apiKey) {
    player.src = url;
    card.refs.download.href = url;
    return;
  }
  // A video element cannot send headers: fetch the MP4 with the key and play it from a blob URL.
  fetch(url, { headers: authHeaders() })
    .then(async (response) => {
      if (!response.ok) {
        let body = null;
        try {
          body = await response.json();
        } catch {
          /* not JSON */
        }
        throw new ApiError(response.status, body);
      }
      return response.blob();
    })
    .then((blob) => {
      if (card.blobUrl) URL.revokeObjectURL(card.blobUrl);
      card.blobUrl = URL.createObjectURL(blob);
      player.src = card.blobUrl;
      card.refs.download.href = card.blobUrl;
    })
    .catch((error) => {
      if (error.status === 401) askForKey(error);
      card.mediaFor = null;
      const text = `cannot load the video: ${error.message}`;
      media.replaceChildren(el("div", { class: "placeholder failed message", text }));
    });
}

function byOldest(a, b) {
  return a.created_at - b.created_at || (state.seen.get(a.id) ?? 0) - (state.seen.get(b.id) ?? 0);
}

function byRunOrder(a, b) {
  return rank(b.status) - rank(a.status) || byOldest(a, b); // running first, then the queue in order
}

function placeCard(card, video) {
  const active = ACTIVE.has(video.status);
  const list = active ? $("queue") : $("gallery");
  // queue: in the order the jobs run (oldest first); gallery: newest first
  const compare = active ? byRunOrder : (a, b) => -byOldest(a, b);
  let before = null;
  for (const child of list.children) {
    if (child === card.el) continue;
    const other = state.videos.get(child.dataset.id);
    if (other && compare(video, other) < 0) {
      before = child;
      break;
    }
  }
  if (card.el.parentNode === list && card.el.nextSibling === before) return;
  if (before) list.insertBefore(card.el, before);
  else list.append(card.el);
}

function removeCard(id) {
  const card = state.cards.get(id);
  if (card) {
    if (card.blobUrl) URL.revokeObjectURL(card.blobUrl);
    card.el.remove();
  }
  state.cards.delete(id);
  state.videos.delete(id);
  state.asOf.delete(id);
  updateEmpty();
}

function updateEmpty() {
  const queued = $("queue").children.length;
  const done = $("gallery").children.length;
  $("queue-empty").hidden = queued > 0;
  $("gallery-empty").hidden = done > 0;
  $("queue-count").textContent = queued ? String(queued) : "";
  $("gallery-count").textContent = done ? String(done) : "";
  // positions in line change as jobs start
  for (const card of state.cards.values()) {
    const video = state.videos.get(card.el.dataset.id);
    if (video && video.status === "queued") card.refs.stage.textContent = stageText(video);
  }
}

async function cancelVideo(id) {
  const card = state.cards.get(id);
  if (card) card.refs.cancel.disabled = true;
  try {
    const asked = performance.now();
    upsertVideo(await api(`/v1/videos/${encodeURIComponent(id)}/cancel`, { method: "POST" }), asked);
  } catch (error) {
    notifyError("Could not cancel the video", error);
  } finally {
    if (card) card.refs.cancel.disabled = false;
  }
}

async function deleteVideo(id) {
  const card = state.cards.get(id);
  if (card) card.refs.remove.disabled = true;
  state.gone.add(id);
  try {
    await api(`/v1/videos/${encodeURIComponent(id)}`, { method: "DELETE" });
    removeCard(id);
    announce("Video deleted");
  } catch (error) {
    state.gone.delete(id);
    if (error.code === "VIDEO_NOT_FOUND") removeCard(id);
    else notifyError("Could not delete the video", error);
  } finally {
    if (card) card.refs.remove.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------- live events

function setConnection(kind) {
  state.connection = kind;
  const node = $("connection");
  node.dataset.state = kind;
  node.querySelector(".label").textContent = {
    connecting: "connecting…",
    live: "live",
    polling: "reconnecting · polling",
    offline: "server unreachable",
    locked: "needs an API key",
  }[kind];
}

function eventsUrl() {
  const url = new URL("/v1/events", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (state.apiKey) url.searchParams.set("api_key", state.apiKey);
  return url.toString();
}

function connect() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  let socket;
  try {
    socket = new WebSocket(eventsUrl());
  } catch {
    scheduleReconnect();
    return;
  }
  state.socket = socket;
  socket.addEventListener("open", () => {
    if (state.socket !== socket) return;
    state.socketOpen = true;
    state.reconnectAttempts = 0;
    setConnection("live");
    updatePolling();
    // catch up on what happened while the socket was down
    loadVideos();
    loadModels();
  });
  socket.addEventListener("message", (message) => {
    if (state.socket !== socket) return;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    handleEvent(event);
  });
  socket.addEventListener("close", () => {
    if (state.socket !== socket) return;
    state.socket = null;
    state.socketOpen = false;
    setConnection(state.needsKey ? "locked" : state.connection === "offline" ? "offline" : "polling");
    updatePolling();
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  if (state.reconnectTimer) return;
  // exponential backoff with jitter, so that many pages do not reconnect in step after a restart
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.reconnectAttempts);
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  state.reconnectAttempts += 1;
  state.reconnectTimer = setTimeout(() => {
    state.reconnectTimer = null;
    if (state.needsKey) {
      scheduleReconnect(); // wait for a key; saving one reconnects at once
      return;
    }
    connect();
  }, delay);
}

function reconnectNow() {
  state.reconnectAttempts = 0;
  const old = state.socket;
  state.socket = null;
  state.socketOpen = false;
  if (old) old.close();
  connect();
}

function handleEvent(event) {
  const type = event.type || "";
  const data = event.data || {};
  if (type.startsWith("video.")) {
    upsertVideo(data);
    return;
  }
  if (type.startsWith("model.download.")) {
    const key = `${data.model}|${data.variant}`;
    if (type === "model.download.progress") {
      state.downloads.set(key, data);
      state.downloadErrors.delete(key);
    } else {
      state.downloads.delete(key);
      if (type === "model.download.failed") {
        const message = (data.error && data.error.message) || "unknown error";
        state.downloadErrors.set(key, message);
        notify(`Download of ${shortName(data.model)} ${data.variant} failed: ${message}`, {
          suggestions: (data.error && data.error.suggestions) || [],
        });
      } else {
        announce(`${shortName(data.model)} ${data.variant} is on disk`);
      }
      scheduleModelsRefresh();
    }
    if (data.model === state.modelId) renderVariants();
  }
}

// While the socket is down: poll the jobs still running (and now and then everything).
function updatePolling() {
  const waiting = [...state.videos.values()].some((v) => ACTIVE.has(v.status)) || state.downloads.size > 0;
  const wanted = !state.socketOpen && waiting;
  if (wanted && !state.pollTimer) {
    state.pollTimer = setInterval(poll, POLL_MS);
  } else if (!wanted && state.pollTimer) {
    clearInterval(state.pollTimer);
    state.pollTimer = null;
  }
}

async function poll() {
  if (state.socketOpen) {
    updatePolling();
    return;
  }
  state.pollTicks += 1;
  if (state.pollTicks % FULL_REFRESH_EVERY === 0) {
    await loadVideos();
    if (state.downloads.size) await loadModels();
    return;
  }
  const active = [...state.videos.values()].filter((v) => ACTIVE.has(v.status));
  await Promise.all(active.map(async (video) => {
    try {
      const asked = performance.now();
      upsertVideo(await api(`/v1/videos/${encodeURIComponent(video.id)}`), asked);
    } catch (error) {
      if (error.code === "VIDEO_NOT_FOUND") removeCard(video.id);
    }
  }));
  if (state.downloads.size) {
    const before = new Set(state.downloads.keys());
    await loadModels();
    for (const key of before) {
      const [modelId, name] = key.split("|");
      const model = state.models.find((m) => m.id === modelId);
      const variant = model && model.variants.find((v) => v.name === name);
      // The model object has no progress before a download's first report: give a new one a moment.
      const young = Date.now() - (state.downloadStarted.get(key) || 0) < 3000;
      if (!variant || variant.state === "complete" || (!variant.download && !young)) {
        state.downloads.delete(key);
      }
    }
    renderVariants();
  }
  updatePolling();
}

// ---------------------------------------------------------------------------------------------- start

function start() {
  setupApiKey();
  setupForm();
  $("refresh").addEventListener("click", () => {
    loadVideos();
    loadModels();
  });
  updateEmpty();
  setConnection("connecting");
  loadModels();
  loadVideos();
  connect();
}

start();
