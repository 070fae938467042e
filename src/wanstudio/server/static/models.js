// The models: loading GET /v1/models, the model select, the model summary and the variant list.

import { api } from "./api.js";
import { $, el } from "./dom.js";
import { downloadProgress, startDownload, variantStatus } from "./downloads.js";
import { formatBytes } from "./format.js";
import { renderLorasForModel } from "./loras.js";
import { renderMemoryOptions } from "./memory.js";
import { applyDefaults, renderImageField, renderLimits, updateSubmitHint } from "./params.js";
import { state } from "./state.js";

const VARIANT_STATES = {
  complete: "on disk",
  partial: "partly downloaded",
  missing: "not downloaded",
  corrupt: "damaged",
  downloading: "downloading",
};

export function currentModel() {
  return state.models.find((m) => m.id === state.modelId) || null;
}

export function currentVariant() {
  const model = currentModel();
  return model ? model.variants.find((v) => v.name === state.variantName) || null : null;
}

export function variantDefaults(model, variant) {
  return (variant && variant.defaults) || (model && model.engine && model.engine.defaults) || {};
}

export async function loadModels() {
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

export function scheduleModelsRefresh() {
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

export function selectModel(modelId, variantName) {
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
  renderMemoryOptions();
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
  renderMemoryOptions(); // the model's profiles and what fits of them
  renderLorasForModel(); // a second weight for the two-expert models
  $("submit").disabled = Boolean(engine.error);
}

export function renderVariants() {
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
