// The create form: its listeners, the multipart body, submitting, and errors marked on their fields.

import { api } from "./api.js";
import { $, announce, el, fillErrorBox } from "./dom.js";
import { lorasField, setChosenLoras } from "./loras.js";
import { memoryFields, setMemoryOptions } from "./memory.js";
import { currentModel, selectModel } from "./models.js";
import { applyDefaults, updateHints } from "./params.js";
import { state } from "./state.js";
import { upsertVideo } from "./videos.js";

// Error `param`s (API field names, and the engine's names for the same things) -> the form field to mark.
const PARAM_FIELDS = {
  model: "model",
  variant: "variant",
  prompt: "prompt",
  negative_prompt: "negative_prompt",
  size: "size",
  width: "size",
  height: "size",
  seconds: "num_frames",
  num_frames: "num_frames",
  frames: "num_frames",
  num_inference_steps: "steps",
  steps: "steps",
  guidance_scale: "guidance_scale",
  fps: "fps",
  seed: "seed",
  input_reference: "image",
  image: "image",
  loras: "loras",
  lora: "loras",
  memory_profile: "memory_profile",
  allow_fallback: "allow_fallback",
};
// Form field -> the inputs to mark invalid.
const FIELD_INPUTS = {
  model: ["model"],
  variant: [],
  prompt: ["prompt"],
  negative_prompt: ["negative_prompt"],
  size: ["width", "height"],
  num_frames: ["num_frames"],
  steps: ["steps"],
  guidance_scale: ["guidance_scale"],
  fps: ["fps"],
  seed: ["seed"],
  image: ["image"],
  loras: [], // the weight inputs come and go with the LoRAs chosen: the fieldset is marked instead
  memory_profile: ["memory_profile"],
  allow_fallback: ["allow_fallback"],
};

export function setupForm() {
  $("model").addEventListener("change", (event) => selectModel(event.target.value));
  $("create-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  $("reset-defaults").addEventListener("click", () => {
    applyDefaults();
    setChosenLoras([]);
    setMemoryOptions(null, false);
  });
  for (const id of ["width", "height", "num_frames", "fps", "prompt"]) {
    $(id).addEventListener("input", updateHints);
  }
  for (const [field, inputs] of Object.entries(FIELD_INPUTS)) {
    for (const id of inputs) $(id).addEventListener("input", () => clearFieldError(field));
  }
  $("image").addEventListener("change", () => {
    clearFieldError("image");
    const file = $("image").files[0];
    if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
    state.imageUrl = file ? URL.createObjectURL(file) : null;
    $("image-preview").hidden = !file;
    $("image-clear").hidden = !file;
    if (file) {
      $("image-preview").src = state.imageUrl;
      $("image-preview").alt = `Preview of ${file.name}`;
    } else {
      $("image-preview").removeAttribute("src");
    }
  });
  $("image-clear").addEventListener("click", () => {
    $("image").value = "";
    $("image").dispatchEvent(new Event("change"));
  });
}

function buildForm() {
  const model = currentModel();
  const data = new FormData();
  const add = (name, value) => {
    const text = value == null ? "" : String(value).trim();
    if (text !== "") data.append(name, text);
  };
  add("model", model ? model.id : "");
  add("variant", state.variantName);
  add("prompt", $("prompt").value);
  add("negative_prompt", $("negative_prompt").value);
  const w = $("width").value.trim();
  const h = $("height").value.trim();
  if (w || h) add("size", `${w}x${h}`);
  add("num_frames", $("num_frames").value);
  add("num_inference_steps", $("steps").value);
  add("guidance_scale", $("guidance_scale").value);
  add("fps", $("fps").value);
  add("seed", $("seed").value);
  const file = $("image").files[0];
  const mode = (model && model.engine && model.engine.inputs && model.engine.inputs.image) || "none";
  if (file && mode !== "none") data.append("input_reference", file, file.name);
  add("loras", lorasField());
  for (const [name, value] of Object.entries(memoryFields())) add(name, value);
  return data;
}

async function submit() {
  clearErrors();
  const button = $("submit");
  button.disabled = true;
  button.textContent = "Submitting…";
  try {
    const asked = performance.now();
    const video = await api("/v1/videos", { method: "POST", form: buildForm() });
    upsertVideo(video, asked);
    announce(`Queued: ${video.prompt}`);
    const card = state.cards.get(video.id);
    if (card) card.el.scrollIntoView({ block: "nearest", behavior: "smooth" });
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = Boolean(currentModel() && currentModel().engine && currentModel().engine.error);
    button.textContent = "Generate";
  }
}

function showError(error) {
  const box = $("form-error");
  fillErrorBox(box, error);
  box.hidden = false;
  const field = PARAM_FIELDS[error.param];
  box.dataset.param = error.param || "";
  box.dataset.field = field || "";
  if (field) markField(field, error.message);
}

function markField(field, message) {
  const inputs = FIELD_INPUTS[field] || [];
  const errorBox = $(`${field}-error`);
  if (field === "variant") $("variant-field").classList.add("invalid");
  if (field === "loras") $("loras-field").classList.add("invalid");
  if (field === "memory_profile" || field === "allow_fallback") $("advanced").open = true;
  for (const id of inputs) {
    const input = $(id);
    input.setAttribute("aria-invalid", "true");
    input.classList.add("invalid");
    if (errorBox) {
      const described = (input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
      if (!described.includes(errorBox.id)) {
        input.setAttribute("aria-describedby", [...described, errorBox.id].join(" "));
      }
    }
  }
  if (errorBox) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }
  if (field === "negative_prompt") $("negative-details").open = true;
  const first = inputs.length ? $(inputs[0]) : null;
  if (first && !first.closest("[hidden]")) first.focus({ preventScroll: false });
}

export function clearFieldError(field) {
  for (const id of FIELD_INPUTS[field] || []) {
    const input = $(id);
    input.removeAttribute("aria-invalid");
    input.classList.remove("invalid");
  }
  if (field === "variant") $("variant-field").classList.remove("invalid");
  if (field === "loras") $("loras-field").classList.remove("invalid");
  const errorBox = $(`${field}-error`);
  if (errorBox) {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }
  if ($("form-error").dataset.field === field) $("form-error").hidden = true;
}

export function clearErrors() {
  for (const field of Object.keys(FIELD_INPUTS)) clearFieldError(field);
  $("form-error").hidden = true;
}
