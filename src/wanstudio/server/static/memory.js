// The machine and the memory options: the hardware line (GET /readyz `hardware`), the memory profile
// select with what fits (the model's `fits` and `engine.vram_estimates`), and "allow fallback".

import { $, el } from "./dom.js";
import { clearFieldError } from "./form.js";
import { formatBytes } from "./format.js";
import { currentModel, currentVariant } from "./models.js";
import { state } from "./state.js";

// The engine's profiles, fastest first, for a model object that does not list its own.
const PROFILES = ["resident", "model_offload", "int8_model_offload", "group_offload", "fp8_group_offload",
                  "sequential_offload"];
const RAM_RESERVE_FRACTION = 0.1; // what the engine keeps back from the RAM when planning (engine/hardware.py)
const RAM_RESERVE_MIN = 2 * 2 ** 30;

export function setupMemory() {
  $("memory_profile").addEventListener("change", () => {
    clearFieldError("memory_profile");
    renderMemoryHint();
    renderAdvancedSummary();
  });
  $("allow_fallback").addEventListener("change", () => {
    clearFieldError("allow_fallback");
    renderAdvancedSummary();
  });
  renderMemoryOptions();
}

export async function loadHardware() {
  // /readyz needs no API key, and answers 503 (with the same body) when a check fails.
  try {
    const response = await fetch("/readyz", { headers: { Accept: "application/json" } });
    const body = await response.json();
    state.hardware = body.hardware || null;
    state.devices = Array.isArray(body.devices) ? body.devices : [];
  } catch {
    state.hardware = null;
  }
  renderHardware();
  renderMemoryOptions();
}

function gpus() {
  return (state.hardware && state.hardware.gpus) || [];
}

// Whether the workers run on a GPU (WAN_DEVICE may keep them on the CPU of a machine that has one).
function jobsOnGpu() {
  if (!gpus().length) return false;
  return !state.devices.length || state.devices.some((device) => String(device).startsWith("cuda"));
}

export function hardwareText() {
  const hw = state.hardware;
  if (!hw) return "";
  const parts = [];
  const cards = gpus();
  if (cards.length) {
    const byName = new Map();
    for (const gpu of cards) byName.set(gpu.name, [...(byName.get(gpu.name) || []), gpu]);
    for (const [name, group] of byName) {
      const vram = formatBytes(group[0].total_vram_bytes);
      parts.push(group.length > 1 ? `${group.length} × ${name} · ${vram} VRAM each` : `${name} · ${vram} VRAM`);
    }
    if (!jobsOnGpu()) parts.push("jobs run on the CPU");
  } else {
    parts.push(hw.mps ? "Apple GPU (MPS)" : "CPU only");
  }
  if (hw.cpu_count) parts.push(`${hw.cpu_count} core${hw.cpu_count === 1 ? "" : "s"}`);
  if (hw.ram_bytes) parts.push(`${formatBytes(hw.ram_bytes)} RAM`);
  return parts.join(" · ");
}

function renderHardware() {
  const line = $("hardware");
  const text = hardwareText();
  line.hidden = !text;
  line.textContent = text;
  const hw = state.hardware || {};
  const extra = [...(hw.notes || [])];
  if (hw.torch_version) extra.unshift(`torch ${hw.torch_version}${hw.cuda_version ? `, CUDA ${hw.cuda_version}` : ""}`);
  line.title = ["This machine: what the memory profiles are planned for", ...extra].join("\n");
  $("hardware-detail").textContent = text ? `This machine: ${text}.` : "";
}

function ramBudget() {
  const ram = state.hardware && state.hardware.ram_bytes;
  if (!ram) return null;
  return Math.max(ram - Math.max(ram * RAM_RESERVE_FRACTION, RAM_RESERVE_MIN), 0);
}

function profileList(model) {
  const listed = model && model.engine && Array.isArray(model.engine.memory_profiles)
    ? model.engine.memory_profiles.filter((p) => p && p.name) : [];
  return listed.length ? listed : PROFILES.map((name) => ({ name, description: "", techniques: [] }));
}

// The planner's choice for the selected variant at its default size (GET /v1/models `fits`).
function fitRow() {
  const model = currentModel();
  const variant = currentVariant();
  if (!model || !variant || !Array.isArray(model.fits)) return null;
  return model.fits.find((fit) => fit.variant === variant.name) || null;
}

// A profile's estimate from the model's table, at the size `fits` plans for; only on a GPU (the table's
// figures are GPU figures) and only when the table has that size (the dev variants' sizes are not in it).
function estimateFor(profile) {
  const model = currentModel();
  const fit = fitRow();
  if (!model || !fit || !jobsOnGpu()) return null;
  const rows = (model.engine && model.engine.vram_estimates) || [];
  const row = rows.find((r) => r.memory_profile === profile && r.resolution === fit.resolution);
  if (!row) return null;
  const free = Math.max(...gpus().map((gpu) => gpu.free_vram_bytes || 0));
  const budget = ramBudget();
  const fits = row.vram_bytes <= free && (budget == null || !row.ram_bytes || row.ram_bytes <= budget);
  return { ...row, fits };
}

export function renderMemoryOptions() {
  const select = $("memory_profile");
  const keep = select.value;
  const model = currentModel();
  const fit = fitRow();
  select.replaceChildren();
  const auto = fit ? `Automatic (${fit.memory_profile} here${fit.fits ? "" : ", may not fit"})` : "Automatic";
  select.append(el("option", { value: "", text: auto }));
  for (const profile of profileList(model)) {
    const estimate = estimateFor(profile.name);
    let text = profile.name;
    if (estimate) {
      text += ` — ~${formatBytes(estimate.vram_bytes)} VRAM, ${estimate.fits ? "fits" : "too big"}`;
    }
    select.append(el("option", { value: profile.name, text }));
  }
  select.value = [...select.options].some((o) => o.value === keep) ? keep : "";
  renderMemoryHint();
  renderAdvancedSummary();
}

function renderMemoryHint() {
  const hint = $("memory_profile-hint");
  const chosen = $("memory_profile").value;
  const fit = fitRow();
  let warn = false;
  const parts = [];
  if (!chosen) {
    if (fit) {
      parts.push(`The engine picks the fastest profile that fits: ${fit.memory_profile} for ${fit.variant} at `
        + `${fit.resolution.replace("x", "×")}, ${fit.num_frames} frames (${fit.reason}).`);
      warn = !fit.fits;
    } else {
      parts.push("The engine picks the fastest profile that fits this machine, job by job.");
    }
  } else {
    const profile = profileList(currentModel()).find((p) => p.name === chosen);
    if (profile && profile.description) parts.push(`${profile.description}.`);
    const estimate = estimateFor(chosen);
    if (estimate) {
      const ram = estimate.ram_bytes ? ` and ${formatBytes(estimate.ram_bytes)} of RAM` : "";
      const size = estimate.resolution.replace("x", "×");
      const verdict = estimate.fits ? "fits this GPU" : "more than this GPU has free";
      parts.push(`About ${formatBytes(estimate.vram_bytes)} of VRAM${ram} at ${size}, ${estimate.num_frames} frames: `
        + `${verdict}.`);
      warn = !estimate.fits;
    }
    if (state.hardware && !jobsOnGpu()) {
      parts.push("No GPU runs the jobs here: on the CPU there is nothing to offload to.");
    }
  }
  hint.textContent = parts.join(" ");
  hint.classList.toggle("warn", warn);
}

function renderAdvancedSummary() {
  const profile = $("memory_profile").value || "automatic";
  const fallback = $("allow_fallback").checked ? "fallback allowed" : "no fallback";
  $("advanced-summary").textContent = `${profile} · ${fallback}`;
}

// The create request's fields: nothing when left as they are (automatic, no fallback).
export function memoryFields() {
  const fields = {};
  if ($("memory_profile").value) fields.memory_profile = $("memory_profile").value;
  if ($("allow_fallback").checked) fields.allow_fallback = "true";
  return fields;
}

export function setMemoryOptions(profile, allowFallback) {
  const select = $("memory_profile");
  if (profile && ![...select.options].some((o) => o.value === profile)) {
    select.append(el("option", { value: profile, text: profile })); // not this model's: the server says so
  }
  select.value = profile || "";
  $("allow_fallback").checked = Boolean(allowFallback);
  if (profile || allowFallback) $("advanced").open = true;
  renderMemoryHint();
  renderAdvancedSummary();
}
