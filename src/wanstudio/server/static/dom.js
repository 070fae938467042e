// DOM helpers: building elements (text only, never HTML), notices, screen-reader announcements,
// progress bars.

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

export function announce(text) {
  const region = $("announcer");
  region.textContent = "";
  // a fresh text node in a later task, so screen readers announce a repeated message too
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

export function notify(
  message,
  { suggestions = [], kind = "error", timeout = kind === "error" ? 0 : 6000 } = {},
) {
  const role = kind === "error" ? "alert" : "status";
  const box = el("div", { class: `notice ${kind}`, role, "data-testid": "notice" });
  const close = el("button", { type: "button", class: "notice-close", "aria-label": "Dismiss", text: "×" });
  close.addEventListener("click", () => box.remove());
  box.append(el("p", { text: message }));
  if (suggestions.length) {
    const list = el("ul", { class: "suggestions" });
    for (const item of suggestions) list.append(el("li", { text: item }));
    box.append(list);
  }
  box.append(close);
  $("notices").append(box);
  if (timeout) setTimeout(() => box.remove(), timeout);
}

export function notifyError(prefix, error) {
  notify(`${prefix}: ${error.message}`, { suggestions: error.suggestions || [] });
}

export function progressBar(value, text) {
  const bar = el("div", {
    class: "progress",
    role: "progressbar",
    "aria-valuemin": 0,
    "aria-valuemax": 100,
  }, el("div", { class: "progress-fill" }));
  setProgress(bar, value, text);
  return bar;
}

export function setProgress(bar, value, text) {
  const rounded = Math.round(value);
  if (bar.getAttribute("aria-valuenow") !== String(rounded)) {
    bar.setAttribute("aria-valuenow", String(rounded));
  }
  bar.setAttribute("aria-valuetext", text || `${rounded}%`);
  bar.firstChild.style.width = `${value}%`;
}

/** Fill an error box (.code, .message, .suggestions) with an API error's code, message and suggestions. */
export function fillErrorBox(box, error) {
  box.querySelector(".code").textContent = error.code;
  box.querySelector(".message").textContent = error.message;
  const list = box.querySelector(".suggestions");
  list.replaceChildren();
  for (const item of error.suggestions || []) list.append(el("li", { text: item }));
  list.hidden = !(error.suggestions || []).length;
}
