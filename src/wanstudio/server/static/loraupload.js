// Uploading a LoRA: POST /v1/loras (multipart: file and name), with its progress and the server's error.

import { ApiError, authHeaders } from "./api.js";
import { askForKey } from "./apikey.js";
import { $, announce, fillErrorBox, progressBar, setProgress } from "./dom.js";
import { formatBytes } from "./format.js";
import { loadLoras } from "./loras.js";

export function setupLoraUpload() {
  $("lora-upload-button").addEventListener("click", uploadLora);
  $("lora-file").addEventListener("change", () => {
    const file = $("lora-file").files[0];
    const name = $("lora-name");
    if (file && (!name.value.trim() || name.dataset.auto === "1")) {
      name.value = nameFromFile(file.name);
      name.dataset.auto = "1";
    }
    hideUploadError();
  });
  $("lora-name").addEventListener("input", () => {
    $("lora-name").dataset.auto = "";
    hideUploadError();
  });
  // Enter in the name field uploads; it must not submit the video form around it.
  $("lora-name").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      uploadLora();
    }
  });
}

function nameFromFile(fileName) {
  const stem = fileName.replace(/\.safetensors$/i, "");
  return stem.replace(/[^A-Za-z0-9._+-]+/g, "_").replace(/\.\.+/g, ".").replace(/^[^A-Za-z0-9]+/, "")
    .slice(0, 128);
}

function hideUploadError() {
  $("lora-upload-error").hidden = true;
}

function showUploadError(error) {
  const box = $("lora-upload-error");
  fillErrorBox(box, error);
  box.dataset.param = error.param || "";
  box.hidden = false;
  const input = error.param === "name" ? $("lora-name") : error.param === "file" ? $("lora-file") : null;
  if (input) input.setAttribute("aria-invalid", "true");
}

function uploadLora() {
  const button = $("lora-upload-button");
  if (button.disabled) return;
  const file = $("lora-file").files[0];
  const name = $("lora-name").value.trim();
  hideUploadError();
  $("lora-file").removeAttribute("aria-invalid");
  $("lora-name").removeAttribute("aria-invalid");
  if (!file) {
    showUploadError(new ApiError(0, { error: {
      code: "NO_FILE", message: "choose the LoRA's .safetensors file first", param: "file" } }));
    return;
  }
  const data = new FormData();
  data.append("name", name || nameFromFile(file.name));
  if ($("lora-replace").checked) data.append("replace", "true");
  data.append("file", file, file.name);

  const slot = $("lora-upload-progress-slot");
  const bar = progressBar(0, "upload 0%");
  bar.dataset.testid = "lora-upload-progress";
  bar.setAttribute("aria-label", "Upload progress");
  slot.replaceChildren(bar);
  const status = $("lora-upload-status");
  status.textContent = `uploading ${file.name} (${formatBytes(file.size)})…`;
  button.disabled = true;

  // fetch() reports no upload progress: XMLHttpRequest does.
  const request = new XMLHttpRequest();
  request.open("POST", "/v1/loras");
  request.setRequestHeader("Accept", "application/json");
  for (const [header, value] of Object.entries(authHeaders())) request.setRequestHeader(header, value);
  request.upload.addEventListener("progress", (event) => {
    if (!event.lengthComputable) return;
    const percent = (event.loaded / event.total) * 100;
    setProgress(bar, percent, `upload ${Math.round(percent)}%`);
    status.textContent = `uploading · ${Math.round(percent)}% of ${formatBytes(event.total)}`;
  });
  const finish = () => {
    button.disabled = false;
  };
  request.addEventListener("load", async () => {
    finish();
    let body = null;
    try {
      body = JSON.parse(request.responseText);
    } catch {
      body = null;
    }
    if (request.status < 200 || request.status >= 300) {
      const error = new ApiError(request.status, body);
      if (error.status === 401 || error.code === "UNAUTHORIZED") askForKey(error);
      slot.replaceChildren();
      status.textContent = "";
      showUploadError(error);
      return;
    }
    setProgress(bar, 100, "uploaded");
    const rank = body && body.rank != null ? `, rank ${body.rank}` : "";
    status.textContent = `Uploaded ${body.name}${rank}: it is in the catalogue below.`;
    $("lora-file").value = "";
    $("lora-name").value = "";
    $("lora-replace").checked = false;
    announce(`LoRA ${body.name} uploaded`);
    await loadLoras();
  });
  request.addEventListener("error", () => {
    finish();
    slot.replaceChildren();
    status.textContent = "";
    showUploadError(new ApiError(0, { error: {
      code: "NETWORK", message: "the upload did not reach the server (connection lost, or the file is too large)",
      suggestions: ["check that wan serve is still running, then try again"] } }));
  });
  request.send(data);
}
