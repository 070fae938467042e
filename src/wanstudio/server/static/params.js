// The parameter fields: ranges and hints from the model's limits, defaults, a video's settings reused.

import { $, announce, el } from "./dom.js";
import { variantStatus } from "./downloads.js";
import { clearErrors, clearFieldError } from "./form.js";
import { formatBytes, formatNumber } from "./format.js";
import { setChosenLoras } from "./loras.js";
import { setMemoryOptions } from "./memory.js";
import { currentModel, currentVariant, selectModel, variantDefaults } from "./models.js";
import { state } from "./state.js";

export function renderLimits() {
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

export function updateHints() {
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

export function renderImageField() {
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

export function applyDefaults() {
  const model = currentModel();
  const variant = currentVariant();
  if (!model) return;
  const d = variantDefaults(model, variant);
  fillParameters(d, { clearMissing: true });
  $("seed").value = "";
  $("params-source").textContent = `defaults of ${model.name} · ${state.variantName}`;
  clearErrors();
  updateHints();
}

// The form fields named like the keys of a variant's defaults and of a video's parameters.
const PARAMETER_FIELDS = ["width", "height", "num_frames", "fps", "steps", "guidance_scale", "negative_prompt"];

/** Put `values` (defaults or a video's parameters) into the parameter fields; a missing value empties its
 * field with `clearMissing`, else leaves it as it is. */
function fillParameters(values, { clearMissing }) {
  for (const id of PARAMETER_FIELDS) {
    const value = values[id];
    if (value != null) $(id).value = String(value);
    else if (clearMissing) $(id).value = "";
  }
}

export function updateSubmitHint() {
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

export function reuseSettings(video) {
  const p = video.parameters || {};
  selectModel(video.model, video.variant);
  $("prompt").value = video.prompt || "";
  fillParameters(p, { clearMissing: false });
  if (p.seed != null) $("seed").value = String(p.seed);
  setChosenLoras(Array.isArray(p.loras) ? p.loras : []);
  setMemoryOptions(p.memory_profile || null, Boolean(p.allow_fallback));
  $("params-source").textContent = `settings of ${video.id}`;
  updateHints();
  $("prompt").focus();
  announce("The form now holds that video's settings, its seed, LoRAs and memory options included");
}
