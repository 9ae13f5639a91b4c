// Small DOM helpers: no framework, text nodes only (never HTML from data), no inline styles.

let uid = 0;
export function nextId(prefix = "f") {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** h("button", {class: "x", type: "button", on: {click: fn}}, "text", child) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function $(sel, root = document) { return root.querySelector(sel); }
export function $$(sel, root = document) { return [...root.querySelectorAll(sel)]; }

export function clear(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  el.removeAttribute("aria-busy");
  return el;
}

export function toast(message, kind = "info", ms = 4000) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const t = h("div", { class: `toast ${kind}` }, message);
  box.append(t);
  setTimeout(() => t.remove(), ms);
}

export function show(el, text, kind) {
  if (!el) return;
  if (text === null || text === undefined || text === "") { el.hidden = true; el.textContent = ""; return; }
  el.textContent = text;
  if (kind) el.className = el.className.replace(/\b(ok|bad|warn)\b/g, "").trim() + " " + kind;
  el.hidden = false;
}

export function badge(status) {
  return h("span", { class: `badge ${status || ""}`, "data-status": status || "" }, status || "—");
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function fmtDuration(start, end) {
  if (!start) return "—";
  const a = new Date(start).getTime();
  const b = end ? new Date(end).getTime() : Date.now();
  const ms = Math.max(0, b - a);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60000);
  return `${m} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function jsonPre(value, cls = "") {
  return h("pre", { class: cls, tabindex: "0" }, JSON.stringify(value, null, 2));
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // no clipboard permission (plain http, an old browser): select and copy
    const ta = h("textarea", { readonly: true, class: "visually-hidden" });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    ta.remove();
    return ok;
  }
}

export function copyButton(getText, label = "Copy") {
  const b = h("button", { type: "button", class: "secondary" }, label);
  b.addEventListener("click", async () => {
    const ok = await copyText(typeof getText === "function" ? getText() : getText);
    toast(ok ? "Copied" : "Copy failed: select the text and copy it", ok ? "ok" : "bad");
  });
  return b;
}

export function busy(button, on, busyText) {
  if (on) {
    button.dataset.label = button.textContent;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    if (busyText) button.textContent = busyText;
  } else {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    if (button.dataset.label) button.textContent = button.dataset.label;
  }
}

export function errorText(e) {
  if (!e) return "something went wrong";
  if (e.name === "ApiError") {
    if (e.status === 429) return `Too many requests: ${e.message}`;
    return e.message;
  }
  return e.message || String(e);
}

/** A poller that waits `ms` between calls, pauses while the tab is hidden, backs off on 429. */
export function poll(fn, ms) {
  let timer = null;
  let stopped = false;
  let delay = ms;
  async function tick() {
    if (stopped) return;
    if (document.hidden) { timer = setTimeout(tick, ms); return; }
    let again = true;
    try {
      again = (await fn()) !== false;
      delay = ms;
    } catch (e) {
      delay = e && e.status === 429 ? Math.max(ms * 4, (e.retryAfter || 5) * 1000) : Math.min(delay * 2, 30000);
    }
    if (again && !stopped) timer = setTimeout(tick, delay);
  }
  tick();
  return { stop() { stopped = true; clearTimeout(timer); } };
}

export function pageIds() {
  try { return JSON.parse(document.body.dataset.ids || "{}"); } catch { return {}; }
}
