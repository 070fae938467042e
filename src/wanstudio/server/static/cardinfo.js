// What a video card says about how the video was made, never silently: a mock video (a test pattern),
// a fallback to another model, the LoRAs applied with their weights, and the memory profile used.

import { el } from "./dom.js";
import { shortName } from "./format.js";

export const MOCK_TEXT = "MOCK — synthetic test pattern, not generated";

export function createCardInfo() {
  return {
    mock: el("p", {
      class: "mock-badge",
      "data-testid": "mock-badge",
      role: "note",
      text: MOCK_TEXT,
      title: "The server runs with WAN_ALLOW_MOCK=1 and the model could not run: this video is a test pattern",
    }),
    fallback: el("p", { class: "fallback-note", "data-testid": "fallback-note", role: "note" }),
    tags: el("ul", { class: "chips card-tags", "data-testid": "card-tags", "aria-label": "How it was made" }),
  };
}

function weightText(value) {
  return Number.isFinite(Number(value)) ? String(Number(value)) : String(value);
}

// {"transformer": 0.8} -> "×0.8"; both experts -> "×0.8 high-noise, ×0.5 low-noise"
export function appliedWeights(weights) {
  const entries = Object.entries(weights || {});
  if (!entries.length) return "";
  if (entries.length === 1) return `×${weightText(entries[0][1])}`;
  const names = { transformer: "high-noise", transformer_2: "low-noise" };
  return entries.map(([expert, value]) => `×${weightText(value)} ${names[expert] || expert}`).join(", ");
}

function askedWeights(lora) {
  const weight = lora.weight == null ? 1 : lora.weight;
  if (lora.weight_2 == null) return `×${weightText(weight)}`;
  return `×${weightText(weight)} high-noise, ×${weightText(lora.weight_2)} low-noise`;
}

export function renderCardInfo(refs, card, video) {
  const p = video.parameters || {};
  const done = video.status === "completed";

  card.classList.toggle("is-mock", Boolean(video.mock));
  refs.mock.hidden = !video.mock;

  const fallback = video.fallback;
  refs.fallback.hidden = !fallback;
  card.classList.toggle("is-fallback", Boolean(fallback));
  if (fallback) {
    const reason = fallback.reason ? ` — ${fallback.reason}` : "";
    refs.fallback.textContent =
      `Fallback: made by ${shortName(fallback.to)} instead of ${shortName(fallback.from)}${reason}`;
  }

  const tags = [];
  tags.push(memoryTag(video, p));
  if (p.allow_fallback && !fallback) {
    tags.push(el("li", {
      class: "chip muted", "data-testid": "fallback-allowed", text: "fallback allowed",
      title: "A lighter model may make this video if this one does not fit",
    }));
  }
  const asked = Array.isArray(p.loras) ? p.loras : [];
  const applied = Array.isArray(video.loras_applied) ? video.loras_applied : null;
  if (done && applied) {
    for (const lora of applied) {
      const details = [lora.style, lora.rank != null ? `rank ${lora.rank}` : null].filter(Boolean).join(", ");
      tags.push(el("li", {
        class: "chip accent lora-chip",
        "data-testid": "lora-applied",
        dataset: { name: lora.name },
        text: `LoRA ${lora.name} ${appliedWeights(lora.weights)}`.trim(),
        title: `applied${details ? ` (${details})` : ""}`,
      }));
    }
    for (const lora of asked) {
      if (applied.some((a) => a.name === lora.name)) continue;
      tags.push(el("li", {
        class: "chip warn lora-chip",
        "data-testid": "lora-skipped",
        dataset: { name: lora.name },
        text: `LoRA ${lora.name} not applied`,
        title: "asked for, but not applied: the warnings say why",
      }));
    }
  } else {
    for (const lora of asked) {
      tags.push(el("li", {
        class: "chip lora-chip",
        "data-testid": "lora-asked",
        dataset: { name: lora.name },
        text: `LoRA ${lora.name} ${askedWeights(lora)}`,
        title: done || video.status === "in_progress" ? "asked for" : "asked for; applied when the job runs",
      }));
    }
  }
  refs.tags.replaceChildren(...tags);
}

function memoryTag(video, p) {
  const plan = video.memory_plan;
  const asked = p.memory_profile || null;
  let text;
  let title;
  if (video.mock) {
    text = "memory: none (mock)";
    title = "nothing was loaded: the model could not run";
  } else if (plan && plan.profile) {
    text = `memory: ${plan.profile}`;
    if (asked && asked !== plan.profile) text += ` (asked ${asked})`;
    const techniques = (plan.techniques || []).join(", ");
    title = [plan.reason, techniques ? `techniques: ${techniques}` : null].filter(Boolean).join("\n");
  } else {
    text = `memory: ${asked || "automatic"}`;
    title = asked ? "the memory profile asked for" : "the engine picks the profile when the job runs";
  }
  const fits = plan ? plan.fits !== false : true;
  return el("li", {
    class: `chip${fits ? "" : " warn"}`,
    "data-testid": "memory-profile",
    dataset: { profile: (plan && plan.profile) || asked || "" },
    text,
    title,
  });
}
