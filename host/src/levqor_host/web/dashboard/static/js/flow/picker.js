// The field picker of template inputs: a button beside the field opens a list of references to
// the trigger's fields, earlier steps' outputs and the enclosing loops' item (from
// GET /api/v1/pipelines/<id>/fields: samples of pinned outputs, the last runs, or the action's
// output schema), and inserts the chosen `{{ ... }}` at the cursor.

import { h, clear, nextId } from "../ui.js";
import { walkDoc } from "./model.js";

/** -1, 0 or 1: the order of two JSON pointers of steps in the document (preorder). */
function order(a, b) {
  const pa = a.split("/").slice(1);
  const pb = b.split("/").slice(1);
  for (let i = 0; i < Math.min(pa.length, pb.length); i += 1) {
    if (pa[i] === pb[i]) continue;
    const na = Number(pa[i]);
    const nb = Number(pb[i]);
    if (!Number.isNaN(na) && !Number.isNaN(nb)) return na < nb ? -1 : 1;
    return pa[i] < pb[i] ? -1 : 1;
  }
  return pa.length === pb.length ? 0 : pa.length < pb.length ? -1 : 1;
}

const inside = (ptr, container) => ptr.startsWith(`${container}/`);

/** The step pointer of a field's pointer: /steps/0/steps/1/payload/text -> /steps/0/steps/1. */
function stepPointer(ptr) {
  const m = /^(.*\/(?:steps|default|on_error|on_failure)\/\d+)(?:\/|$)/.exec(ptr);
  return m ? m[1] : ptr;
}

/** The sources a field at `ptr` can refer to: the trigger, earlier steps, enclosing loops' items. */
export function inScope(sources, ptr) {
  const here = stepPointer(ptr);
  return sources.filter((s) => {
    if (s.kind === "trigger") return true;
    if (s.kind === "item") return inside(here, `${s.pointer.replace(/\/items$/, "")}/steps`);
    if (s.pointer === here || inside(here, s.pointer)) return false; // itself, or what holds it
    if (s.id === "error") return inside(here, s.pointer);
    return order(s.pointer, here) < 0;
  });
}

/** Sources the document itself says (steps not saved yet, error paths): no samples. */
export function localSources(doc) {
  const out = [{ id: "trigger", kind: "trigger", pointer: "", source: "none", fields: [{ ref: "{{ trigger }}", label: "trigger" }] }];
  walkDoc(doc, (s, ptr) => {
    if (!s.id) return;
    out.push({ id: s.id, kind: "step", pointer: ptr, source: "none", fields: [{ ref: `{{ steps.${s.id}.output }}`, label: `steps.${s.id}.output` }] });
    if (s.type === "for_each") {
      out.push({ id: `${s.id}.item`, kind: "item", pointer: ptr, source: "none", fields: [{ ref: "{{ item }}", label: "item" }, { ref: "{{ index }}", label: "index" }] });
    }
    if (Array.isArray(s.on_error)) {
      out.push({ id: "error", kind: "error", pointer: `${ptr}/on_error`, source: "none", fields: [{ ref: "{{ error.message }}", label: "error.message" }, { ref: "{{ error }}", label: "error" }] });
    }
  });
  return out;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const METHODS = new Set(["clear", "copy", "fromkeys", "get", "items", "keys", "pop", "popitem", "setdefault", "update", "values"]);

/**
 * `value` (what `expr` holds) as picker fields, as the server's field picker makes them: the
 * whole value, then every key of its objects (a list by its first element), depth first.
 */
export function flatten(expr, label, value, depth = 0, out = []) {
  if (out.length >= 200) return out;
  const short = typeof value === "string" && value.length > 200 ? `${value.slice(0, 200)}…`
    : value !== null && typeof value === "object" && JSON.stringify(value).length > 200 ? null : value;
  out.push({ ref: `{{ ${expr} }}`, label, sample: short });
  if (depth >= 6) return out;
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) {
      const e = NAME.test(k) && !METHODS.has(k) ? `${expr}.${k}` : `${expr}[${JSON.stringify(k)}]`;
      flatten(e, `${label} › ${k}`, v, depth + 1, out);
    }
  } else if (Array.isArray(value) && value.length) {
    flatten(`${expr}[0]`, `${label} › first`, value[0], depth + 1, out);
  }
  return out;
}

/** The server's sources, and the document's for what the server does not know yet. */
export function mergeSources(server, local) {
  const known = new Set(server.map((s) => `${s.kind}:${s.id}`));
  return [...server, ...local.filter((s) => s.kind === "error" || !known.has(`${s.kind}:${s.id}`))];
}

function sampleText(v) {
  if (v === undefined) return "";
  const t = typeof v === "string" ? v : JSON.stringify(v);
  return t.length > 60 ? `${t.slice(0, 57)}…` : t;
}

function sourceTitle(s) {
  if (s.kind === "trigger") return "Trigger";
  if (s.kind === "item") return `Item of ${s.id.replace(/\.item$/, "")}`;
  if (s.kind === "error") return "The error (error path)";
  return `Step ${s.id}${s.connector ? ` (${s.connector}.${s.action})` : ""}`;
}

const FROM = { pinned: "pinned sample", run: "from a recent run", schema: "from the output schema",
  sample: "the event's sample", test: "from Test trigger" };

function pick(sources, label) {
  const titleId = nextId("picker-title");
  const searchId = nextId("picker-search");
  const dialog = h("dialog", { class: "chooser picker", "aria-labelledby": titleId });
  document.body.append(dialog);
  return new Promise((resolve) => {
    let answer = null;
    dialog.addEventListener("close", () => { resolve(answer); dialog.remove(); });
    const list = h("ul", { class: "chooser-list" });
    const search = h("input", { id: searchId, type: "search", autocomplete: "off", placeholder: "name, total, email…" });
    const fill = () => {
      const q = search.value.trim().toLowerCase();
      const groups = sources.map((s) => {
        const fields = (s.fields || []).filter((f) => !q || f.ref.toLowerCase().includes(q) || (f.label || "").toLowerCase().includes(q));
        if (!fields.length) return null;
        return h("li", { class: "chooser-connector", "data-source": s.id },
          h("h4", {}, sourceTitle(s), FROM[s.source] ? h("span", { class: "muted small" }, ` · ${FROM[s.source]}`) : null),
          h("ul", { class: "picker-fields" }, fields.map((f) => h("li", {},
            h("button", { type: "button", class: "secondary small", "data-ref": f.ref, on: { click: () => { answer = f.ref; dialog.close(); } } },
              h("code", {}, f.label || f.ref)),
            f.sample !== undefined && f.sample !== null ? h("span", { class: "muted small sample" }, ` ${sampleText(f.sample)}`) : null))));
      }).filter(Boolean);
      clear(list, groups.length ? groups : h("li", { class: "muted" }, "No field matches."));
    };
    search.addEventListener("input", fill);
    fill();
    dialog.append(
      h("header", {}, h("h2", { id: titleId }, "Insert a field", h("span", { class: "muted small" }, ` into ${label}`)),
        h("button", { type: "button", class: "secondary small", on: { click: () => dialog.close() } }, "Close")),
      h("div", { class: "field" }, h("label", { for: searchId }, "Search fields"), search),
      list);
    dialog.showModal();
    search.focus();
  });
}

function insert(control, ref) {
  const start = control.selectionStart ?? control.value.length;
  const end = control.selectionEnd ?? start;
  control.focus();
  control.setRangeText(ref, start, end, "end");
  control.dispatchEvent(new Event("input", { bubbles: true }));
}

/**
 * The editor's `picker` hook: `sources()` resolves to every source of the pipeline (server's and
 * the document's); the button beside each template field offers those in scope there.
 */
export function fieldPicker(sources) {
  return (control, ptr, fieldEl) => {
    if (control.parentElement !== fieldEl) return; // a row of a list field: its field has no room for one
    const label = fieldEl.querySelector(":scope > label");
    const text = label ? label.textContent.replace(/\s*\*$/, "") : "the field";
    // named "Insert a field" (not after the field: the field's label names only the field)
    const btn = h("button", { type: "button", class: "secondary small pick", "aria-label": "Insert a field", title: `Insert a field into ${text}` }, "{ }");
    btn.addEventListener("click", async () => {
      btn.disabled = true;
      try {
        const ref = await pick(inScope(await sources(), ptr), text);
        if (ref) insert(control, ref); else control.focus();
      } finally {
        btn.disabled = false;
      }
    });
    fieldEl.classList.add("has-pick");
    fieldEl.insertBefore(btn, control);
  };
}
