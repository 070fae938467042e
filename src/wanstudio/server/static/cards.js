// One video card: created once, then updated in place (status, progress, stage, error, media).

import { ApiError, authHeaders } from "./api.js";
import { askForKey } from "./apikey.js";
import { createCardInfo, renderCardInfo } from "./cardinfo.js";
import { el, progressBar, setProgress } from "./dom.js";
import { formatBytes, formatDuration, ordinal, shortName } from "./format.js";
import { reuseSettings } from "./params.js";
import { ACTIVE, FINISHED, state } from "./state.js";
import { cancelVideo, deleteVideo, placeCard, queuePosition, updateEmpty } from "./videos.js";

export const STAGES = {
  queued: "waiting in the queue",
  ensuring: "fetching the model",
  loading: "loading the model",
  denoising: "denoising",
  decoding: "decoding frames",
  encoding: "encoding the MP4",
  done: "done",
};

export function renderCard(video, previous) {
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
  // after a fallback the video is another model's: say which (the fallback note says why)
  const made = video.fallback && video.fallback.to
    ? `${shortName(video.fallback.to)} (asked ${shortName(video.model)} · ${video.variant})`
    : `${shortName(video.model)} · ${video.variant}`;
  const meta = [
    made,
    video.size ? video.size.replace("x", "×") : null,
    p.num_frames ? `${p.num_frames} frames (${video.seconds} s @ ${p.fps} fps)` : `${video.seconds} s`,
    video.total_steps ? `${video.total_steps} steps` : null,
    p.seed != null ? `seed ${p.seed}` : null,
  ];
  refs.meta.textContent = meta.filter(Boolean).join(" · ");
  const created = new Date(video.created_at * 1000);
  refs.time.textContent = created.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  refs.time.dateTime = created.toISOString();
  renderCardInfo(refs, card.el, video);

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

export function stageText(video, percent = video.progress || 0) {
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
  refs.warnings = el("ul", { class: "warnings", "data-testid": "warnings", "aria-label": "Warnings" });
  Object.assign(refs, createCardInfo());
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
    refs.mock,
    refs.prompt,
    refs.meta,
    refs.fallback,
    refs.tags,
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
    "aria-label": video.mock ? `Mock test pattern, not a generated video: ${video.prompt}` : `Video: ${video.prompt}`,
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
