// The one way the dashboard talks to the host: the public JSON API, same origin, with the
// session cookie (and the X-CSRF-Token header on changes) or a pasted Supabase token.

const TOKEN_KEY = "levqor_token";
const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details || null;
  }
  get problems() {
    return (this.details && Array.isArray(this.details.problems)) ? this.details.problems : [];
  }
}

export function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage off: cookie sign-in still works */ }
}

export function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return null;
}

// Set once the page is leaving on purpose (signing out): a 401 that a request still in
// flight gets afterwards must not send the browser somewhere else instead.
let leaving = false;
export function leavePage() { leaving = true; }

export function signinUrl() {
  const next = location.pathname + location.search;
  return "/signin?next=" + encodeURIComponent(next);
}

/**
 * api("GET", "/api/v1/pipelines") -> the parsed JSON answer, or throws ApiError.
 * A 401 sends the browser to the sign-in page unless opts.allow401.
 */
export async function api(method, path, body, opts = {}) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!SAFE.has(method) && !token) {
    const csrf = cookie("levqor_csrf");
    if (csrf) headers["X-CSRF-Token"] = csrf;
  }
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal: opts.signal,
    });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, "network", "the server cannot be reached: check your connection");
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    const err = (data && data.error) || {};
    const e = new ApiError(resp.status, err.code || "http_" + resp.status,
      err.message || resp.statusText || "request failed", err.details);
    e.retryAfter = Number(resp.headers.get("Retry-After")) || null;
    if (resp.status === 401 && !opts.allow401) {
      // signed out or expired: leave for the sign-in page; the caller waits for nothing
      setToken(null);
      if (!leaving) location.assign(signinUrl());
      return new Promise(() => {});
    }
    throw e;
  }
  return data;
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body === undefined ? {} : body, opts);
export const put = (path, body, opts) => api("PUT", path, body, opts);
export const del = (path, opts) => api("DELETE", path, undefined, opts);

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") u.set(k, v);
  const s = u.toString();
  return s ? "?" + s : "";
}
