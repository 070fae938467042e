// Variant downloads: starting one, its progress in the variant list, its model.download.* events.

import { api } from "./api.js";
import { announce, el, notify, notifyError, progressBar } from "./dom.js";
import { formatBytes, formatDuration, shortName } from "./format.js";
import { renderVariants, scheduleModelsRefresh } from "./models.js";
import { state } from "./state.js";

export function variantStatus(model, variant) {
  const key = `${model.id}|${variant.name}`;
  if (state.downloads.has(key)) return "downloading";
  return variant.state || "missing";
}

export function downloadProgress(data) {
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

export async function startDownload(model, variant) {
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

// A model.download.* event from the socket: the progress, or the end, of a variant's download.
export function handleDownloadEvent(type, data) {
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
