// The fetch wrapper for the HTTP API: the API key as a Bearer header, errors as ApiError objects.

import { askForKey } from "./apikey.js";
import { setConnection } from "./events.js";
import { state } from "./state.js";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.code = error.code || (status ? `HTTP ${status}` : "NETWORK");
    this.param = error.param || null;
    this.suggestions = Array.isArray(error.suggestions) ? error.suggestions : [];
  }
}

export function authHeaders() {
  return state.apiKey ? { Authorization: `Bearer ${state.apiKey}` } : {};
}

export async function api(path, { method, json, form } = {}) {
  const init = {
    method: method || (json !== undefined || form ? "POST" : "GET"),
    headers: { Accept: "application/json", ...authHeaders() },
  };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form; // the browser sets multipart/form-data with its boundary
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (cause) {
    setConnection("offline");
    const error = new ApiError(0, {
      error: {
        code: "NETWORK",
        message: `cannot reach the server (${cause.message || cause})`,
        suggestions: ["check that wan serve is still running, then try again"],
      },
    });
    throw error;
  }
  let body = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      body = await response.json();
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, body);
    if (response.status === 401 || error.code === "UNAUTHORIZED") askForKey(error);
    throw error;
  }
  if (state.connection === "offline") setConnection(state.socketOpen ? "live" : "polling");
  return body;
}
