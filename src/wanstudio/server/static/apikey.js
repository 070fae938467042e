// The API key panel: asking for a key when the server refuses, saving and forgetting it.

import { renderCard } from "./cards.js";
import { $, announce } from "./dom.js";
import { reconnectNow, setConnection } from "./events.js";
import { loadLoras } from "./loras.js";
import { loadModels } from "./models.js";
import { KEY_STORAGE, state } from "./state.js";
import { loadVideos } from "./videos.js";

export function askForKey(error) {
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

export function setupApiKey() {
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
  loadLoras();
  loadVideos();
  for (const [id, card] of state.cards) {
    card.mediaFor = null; // refetch the videos with the new key
    renderCard(state.videos.get(id));
  }
}
