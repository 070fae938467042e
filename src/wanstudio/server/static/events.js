// Live updates: the WebSocket GET /v1/events with reconnect backoff, and polling while it is down.

import { api } from "./api.js";
import { $ } from "./dom.js";
import { handleDownloadEvent } from "./downloads.js";
import { loadModels, renderVariants } from "./models.js";
import { ACTIVE, state } from "./state.js";
import { loadVideos, removeCard, upsertVideo } from "./videos.js";

const POLL_MS = 1000;
const FULL_REFRESH_EVERY = 5; // polls: the whole list (and models) every fifth tick while the socket is down
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

export function setConnection(kind) {
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

export function connect() {
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

export function reconnectNow() {
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
  if (type.startsWith("model.download.")) handleDownloadEvent(type, data);
}

// While the socket is down: poll the jobs still running (and now and then everything).
export function updatePolling() {
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
