// The wanstudio web UI: a client of the same HTTP API as every other (CONTRACT section 8), no build step.
//
// Data flow: models come from GET /v1/models, videos from GET /v1/videos; from then on the WebSocket
// GET /v1/events pushes every change (video.*, model.download.*). While the socket is down the page
// polls the jobs it is waiting on and reconnects with exponential backoff. Every piece of server data
// reaches the page through textContent or attributes, never as HTML.
//
// This file only wires the modules together and starts the page:
//   state.js      the page's shared state
//   dom.js        element helpers, notices, announcements, progress bars
//   format.js     bytes, durations, numbers and names as text
//   api.js        the fetch wrapper and its error objects
//   apikey.js     the API key panel (kept in localStorage)
//   events.js     the WebSocket, its reconnect backoff and the polling fallback
//   models.js     the model and variant pickers
//   downloads.js  variant downloads and their progress
//   params.js     the parameter fields: limits, hints, defaults, reuse
//   form.js       the create form: submit and error display
//   loras.js      the LoRA catalogue, the LoRAs chosen for a job and their weights, delete
//   loraupload.js uploading a LoRA, with its progress and errors
//   memory.js     the hardware line, the memory profile select and "allow fallback"
//   videos.js     the video list: loading, ordering, queue and gallery, cancel and delete
//   cards.js      one video card: status, progress, stage, media
//   cardinfo.js   on a card: mock and fallback marks, LoRAs applied, the memory profile used

import { setupApiKey } from "./apikey.js";
import { $ } from "./dom.js";
import { connect, setConnection } from "./events.js";
import { setupForm } from "./form.js";
import { loadLoras, setupLoras } from "./loras.js";
import { loadHardware, setupMemory } from "./memory.js";
import { loadModels } from "./models.js";
import { loadVideos, updateEmpty } from "./videos.js";

function start() {
  setupApiKey();
  setupForm();
  setupLoras();
  setupMemory();
  $("refresh").addEventListener("click", () => {
    loadVideos();
    loadModels();
    loadLoras();
  });
  updateEmpty();
  setConnection("connecting");
  loadHardware();
  loadModels();
  loadLoras();
  loadVideos();
  connect();
}

start();
