// LoRAs: the catalogue (GET /v1/loras), the LoRAs chosen for the next job with their weights, and
// deleting one (DELETE /v1/loras/{name}). Uploading is loraupload.js.

import { api } from "./api.js";
import { $, announce, el, notifyError } from "./dom.js";
import { clearFieldError } from "./form.js";
import { formatBytes, shortName } from "./format.js";
import { setupLoraUpload } from "./loraupload.js";
import { currentModel } from "./models.js";
import { state } from "./state.js";

const MAX_LORAS = 8; // per job (the engine's MAX_LORAS)
const MAX_WEIGHT = 4; // |weight| (the engine's MAX_WEIGHT)
const CONFIRM_MS = 5000;

export function setupLoras() {
  $("lora-refresh").addEventListener("click", loadLoras);
  setupLoraUpload();
}

export async function loadLoras() {
  let body;
  try {
    body = await api("/v1/loras");
  } catch (error) {
    state.lorasError = error.status === 401
      ? "Enter the server's API key (above) to see its LoRAs."
      : `Could not load the LoRAs: ${error.message}`;
    renderLoras();
    return;
  }
  state.lorasError = null;
  state.loras = (body && body.data) || [];
  renderLoras();
}

function twoExperts() {
  const model = currentModel();
  return Boolean(model && model.engine && model.engine.experts === 2);
}

function entryOf(name) {
  return (state.loras || []).find((entry) => entry.name === name) || null;
}

// A manifest LoRA made for other models: named in its `base_models` (ids or short names).
function madeForOthers(entry) {
  const model = currentModel();
  const bases = Array.isArray(entry.base_models) ? entry.base_models : [];
  if (!model || !bases.length) return false;
  return !bases.some((base) => base === model.id || shortName(base) === model.name);
}

export function renderLoras() {
  renderCatalog();
  renderChosen();
}

// On a model change only (the models are reloaded after every video, and re-rendering the weights would
// take a slider from under the pointer): two-expert models have a second weight, and manifest LoRAs name
// the models they are for.
let renderedFor;
export function renderLorasForModel() {
  if (renderedFor === state.modelId) return;
  renderedFor = state.modelId;
  renderLoras();
}

function renderCatalog() {
  const list = $("lora-catalog");
  const focus = focusedControl(list);
  list.replaceChildren();
  const entries = state.loras || [];
  const empty = $("lora-catalog-empty");
  empty.hidden = entries.length > 0 && !state.lorasError;
  empty.classList.toggle("field-error", Boolean(state.lorasError));
  const none = state.loras === null ? "Loading the catalogue…" : "The catalogue is empty: upload a LoRA below.";
  empty.textContent = state.lorasError || none;
  $("lora-count").textContent = entries.length ? String(entries.length) : "";
  const full = state.chosenLoras.length >= MAX_LORAS;
  for (const entry of entries) {
    const chosen = state.chosenLoras.some((lora) => lora.name === entry.name);
    const details = [
      entry.rank != null ? `rank ${entry.rank}` : null,
      entry.style || null,
      entry.size_bytes != null ? formatBytes(entry.size_bytes) : null,
      expertsText(entry.experts),
      entry.source === "manifest" ? "from the manifest" : null,
      entry.state && entry.state !== "complete" ? entry.state : null,
    ].filter(Boolean).join(" · ");
    const add = el("button", {
      type: "button",
      class: "ghost small",
      "data-testid": "lora-add",
      text: chosen ? "Added" : "Add",
      "aria-label": `Add the LoRA ${entry.name} to this video`,
      onclick: () => addLora(entry.name),
    });
    add.disabled = Boolean(entry.problem) || chosen || full;
    if (full && !chosen) add.title = `at most ${MAX_LORAS} LoRAs a video`;
    const row = el("li", {
      class: `lora-entry${entry.problem ? " has-problem" : ""}`,
      "data-testid": "lora-entry",
      dataset: { name: entry.name, source: entry.source || "catalogue" },
    },
    el("div", { class: "lora-entry-text" },
      el("span", { class: "lora-name", text: entry.name }),
      details ? el("span", { class: "lora-details", text: details }) : null),
    el("div", { class: "lora-entry-actions" }, add,
      entry.source === "manifest" ? null : deleteButton(entry.name)));
    const bases = Array.isArray(entry.base_models) ? entry.base_models : [];
    if (bases.length) {
      const text = `for ${bases.map(shortName).join(", ")}`;
      const warn = madeForOthers(entry);
      row.append(el("p", {
        class: `lora-note${warn ? " warn" : ""}`,
        text: warn ? `${text}: not made for ${currentModel().name}` : text,
      }));
    }
    if (entry.problem) {
      row.append(el("p", { class: "lora-problem", "data-testid": "lora-problem", text: entry.problem }));
    }
    list.append(row);
  }
  restoreFocus(list, focus);
}

function expertsText(experts) {
  if (!Array.isArray(experts) || !experts.length) return null;
  const high = experts.includes("transformer");
  const low = experts.includes("transformer_2");
  if (high && low) return "both experts";
  if (low) return "low-noise expert only";
  return null;
}

function deleteButton(name) {
  const button = el("button", {
    type: "button",
    class: "ghost small danger",
    "data-testid": "lora-delete",
    text: "Delete",
    "aria-label": `Delete the LoRA ${name} from the catalogue`,
  });
  button.addEventListener("click", () => {
    if (button.dataset.confirm !== "1") {
      // a second click deletes: the file is gone for every user of this server
      button.dataset.confirm = "1";
      button.textContent = "Delete?";
      button.setAttribute("aria-label", `Confirm: delete the LoRA ${name} from the server`);
      setTimeout(() => {
        if (!button.isConnected) return;
        button.dataset.confirm = "";
        button.textContent = "Delete";
        button.setAttribute("aria-label", `Delete the LoRA ${name} from the catalogue`);
      }, CONFIRM_MS);
      return;
    }
    deleteLora(name, button);
  });
  return button;
}

async function deleteLora(name, button) {
  button.disabled = true;
  try {
    await api(`/v1/loras/${encodeURIComponent(name)}`, { method: "DELETE" });
    announce(`LoRA ${name} deleted`);
  } catch (error) {
    if (error.status !== 404) notifyError(`Could not delete the LoRA ${name}`, error);
  }
  await loadLoras();
}

function addLora(name) {
  if (state.chosenLoras.some((lora) => lora.name === name) || state.chosenLoras.length >= MAX_LORAS) return;
  state.chosenLoras.push({ name, weight: 1, weight_2: null });
  clearFieldError("loras");
  renderLoras();
  const rows = $("lora-chosen").querySelectorAll("[data-testid=lora-chosen]");
  const last = rows[rows.length - 1];
  if (last) last.querySelector("[data-testid=lora-weight]").focus();
  announce(`LoRA ${name} added with weight 1`);
}

function removeLora(index) {
  const [removed] = state.chosenLoras.splice(index, 1);
  clearFieldError("loras");
  renderLoras();
  if (removed) announce(`LoRA ${removed.name} removed`);
}

function renderChosen() {
  const list = $("lora-chosen");
  const focus = focusedControl(list);
  list.replaceChildren();
  const two = twoExperts();
  state.chosenLoras.forEach((lora, index) => {
    const entry = entryOf(lora.name);
    const row = el("li", { class: "lora-chosen-row", "data-testid": "lora-chosen", dataset: { name: lora.name } });
    row.append(
      el("span", { class: "lora-name", text: lora.name }),
      el("button", {
        type: "button",
        class: "ghost small danger lora-remove",
        "data-testid": "lora-remove",
        text: "Remove",
        "aria-label": `Remove the LoRA ${lora.name} from this video`,
        onclick: () => removeLora(index),
      }),
      weightControl(lora, index, "weight", two ? "High noise" : "Weight"),
    );
    if (two) row.append(weightControl(lora, index, "weight_2", "Low noise"));
    let note = null;
    if (state.loras !== null && !entry) note = "not in the catalogue: the server will refuse the job";
    else if (entry && entry.problem) note = `this file has a problem: ${entry.problem}`;
    else if (entry && madeForOthers(entry)) note = `made for ${entry.base_models.map(shortName).join(", ")}`;
    if (note) row.append(el("p", { class: "lora-problem", text: note }));
    list.append(row);
  });
  $("lora-chosen-empty").hidden = state.chosenLoras.length > 0;
  restoreFocus(list, focus);
}

// A slider and a number box for one weight, kept in step. weight_2 may be empty: the same as weight.
function weightControl(lora, index, key, text) {
  const id = `lora-${key === "weight" ? "weight" : "weight2"}-${index}`;
  const optional = key === "weight_2";
  const value = lora[key];
  const number = el("input", {
    type: "number",
    id,
    class: "weight-number",
    min: -MAX_WEIGHT,
    max: MAX_WEIGHT,
    step: 0.05,
    inputmode: "decimal",
    "data-testid": optional ? "lora-weight-2" : "lora-weight",
    placeholder: optional ? "same" : null,
  });
  number.value = value == null ? "" : String(value);
  const range = el("input", {
    type: "range",
    class: "weight-range",
    min: -MAX_WEIGHT,
    max: MAX_WEIGHT,
    step: 0.05,
    "aria-label": `${text === "Weight" ? "Weight" : `${text} weight`} of ${lora.name} (slider)`,
    "data-testid": optional ? "lora-weight-2-range" : "lora-weight-range",
  });
  range.value = String(value == null ? lora.weight : value);
  number.addEventListener("input", () => {
    const text = number.value.trim();
    const parsed = text === "" ? null : Number(text);
    lora[key] = parsed; // an empty weight is left out of the request: the server's default, 1
    if (parsed != null && Number.isFinite(parsed)) range.value = String(parsed);
    clearFieldError("loras");
  });
  range.addEventListener("input", () => {
    lora[key] = Number(range.value);
    number.value = range.value;
    clearFieldError("loras");
  });
  const hint = optional ? el("span", { class: "hint", text: "for the low-noise expert; empty: the same" }) : null;
  return el("div", { class: "lora-weight" },
    el("label", { for: id, text }), range, number, hint);
}

// The `loras` field of the create request: one JSON list (the server also takes loras[][name] fields).
export function lorasField() {
  if (!state.chosenLoras.length) return null;
  return JSON.stringify(state.chosenLoras.map((lora) => {
    const item = { name: lora.name };
    if (lora.weight != null) item.weight = lora.weight;
    if (lora.weight_2 != null && twoExperts()) item.weight_2 = lora.weight_2;
    return item;
  }));
}

export function setChosenLoras(loras) {
  state.chosenLoras = (loras || []).slice(0, MAX_LORAS).map((lora) => ({
    name: String(lora.name),
    weight: lora.weight == null ? 1 : Number(lora.weight),
    weight_2: lora.weight_2 == null ? null : Number(lora.weight_2),
  }));
  renderLoras();
}

// -------------------------------------------------------------------------------------- focus keeping

function focusedControl(list) {
  const active = document.activeElement;
  if (!active || !list.contains(active)) return null;
  const row = active.closest("li");
  return row ? { name: row.dataset.name, testid: active.dataset.testid } : null;
}

function restoreFocus(list, focus) {
  if (!focus) return;
  const row = [...list.children].find((child) => child.dataset.name === focus.name);
  const target = row && row.querySelector(`[data-testid="${CSS.escape(focus.testid || "")}"]`);
  if (target && !target.disabled) target.focus();
}
