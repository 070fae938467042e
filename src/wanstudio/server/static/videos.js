// The videos: loading the list, merging updates (stale or late ones dropped), the queue and gallery
// order, cancel and delete.

import { api } from "./api.js";
import { STAGES, renderCard, stageText } from "./cards.js";
import { $, announce, notifyError } from "./dom.js";
import { updatePolling } from "./events.js";
import { scheduleModelsRefresh } from "./models.js";
import { ACTIVE, state } from "./state.js";

const LIST_LIMIT = 50;

export async function loadVideos() {
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
export function upsertVideo(video, asOf = performance.now()) {
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

export function queuePosition(video) {
  const queued = [...state.videos.values()].filter((v) => v.status === "queued").sort(byOldest);
  return queued.findIndex((v) => v.id === video.id) + 1;
}

function byOldest(a, b) {
  return a.created_at - b.created_at || (state.seen.get(a.id) ?? 0) - (state.seen.get(b.id) ?? 0);
}

function byRunOrder(a, b) {
  return rank(b.status) - rank(a.status) || byOldest(a, b); // running first, then the queue in order
}

export function placeCard(card, video) {
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

export function removeCard(id) {
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

export function updateEmpty() {
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

export async function cancelVideo(id) {
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

export async function deleteVideo(id) {
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
