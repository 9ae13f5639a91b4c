// Fields of the flow builder's cards. Every field carries the JSON pointer of the value it edits
// (data-pointer) so a 422 problem from the API lands on it; a value that does not parse is kept
// in `ed.bad` (pointer -> message) and reported before saving.

import { h, nextId } from "../ui.js";
import { conditionText, parseCondition, parseCount } from "./model.js";

/** A labelled field: <div class="field" data-pointer> label, control, help, error. */
export function field(ptr, label, control, help, { req = false } = {}) {
  const helpId = help ? `${control.id}-help` : null;
  if (helpId) control.setAttribute("aria-describedby", helpId);
  return h("div", { class: "field", "data-pointer": ptr },
    h("label", { for: control.id }, label, req ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null),
    control, help ? h("small", { class: "help", id: helpId }, help) : null,
    h("p", { class: "field-error", hidden: true }));
}

function markBad(ed, ptr, control, message) {
  const err = control.closest(".field")?.querySelector(":scope > .field-error");
  if (message) {
    ed.bad.set(ptr, message);
    control.setAttribute("aria-invalid", "true");
    if (err) { err.textContent = message; err.hidden = false; }
  } else {
    ed.bad.delete(ptr);
    control.removeAttribute("aria-invalid");
    if (err && !err.dataset.fromApi) { err.textContent = ""; err.hidden = true; }
  }
}

/** A text field (a template when `template`: the field picker offers references). */
export function textField(ed, ptr, label, value, set, { help, placeholder, template = false, long = false, req = false } = {}) {
  const id = nextId("ff");
  const attrs = { id, placeholder, spellcheck: "false", autocomplete: "off", class: template ? "mono template" : null, required: req };
  const control = long ? h("textarea", { ...attrs, rows: "2" }) : h("input", { ...attrs, type: "text" });
  control.value = value === undefined || value === null ? "" : String(value);
  control.addEventListener("input", () => { set(control.value); ed.changed(); });
  const f = field(ptr, label, control, help, { req });
  if (template && ed.picker) ed.picker(control, ptr, f);
  return f;
}

/** A condition ("" none, true/false, a JSON condition object, or a template). */
export function conditionField(ed, ptr, label, value, set, help) {
  const id = nextId("cond");
  const control = h("input", { id, type: "text", class: "mono template", spellcheck: "false", autocomplete: "off", placeholder: "{{ trigger.total > 100 }}" });
  control.value = conditionText(value);
  control.addEventListener("input", () => {
    const out = parseCondition(control.value);
    markBad(ed, ptr, control, out.ok ? null : out.message);
    if (out.ok) set(out.value);
    ed.changed();
  });
  const f = field(ptr, label, control, help || "a template, true/false, or a condition object ({\"left\": …, \"op\": \"gt\", \"right\": …})");
  if (ed.picker) ed.picker(control, ptr, f);
  return f;
}

/** A whole number ("" leaves it out: the document's default). */
export function countField(ed, ptr, label, value, set, { help, placeholder, min = 0 } = {}) {
  const id = nextId("num");
  const control = h("input", { id, type: "text", inputmode: "numeric", placeholder, autocomplete: "off" });
  control.value = value === undefined || value === null ? "" : String(value);
  control.addEventListener("input", () => {
    const n = parseCount(control.value);
    const bad = Number.isNaN(n) || (n !== undefined && n < min) ? `a whole number${min ? ` of at least ${min}` : ""}` : null;
    markBad(ed, ptr, control, bad);
    if (!bad) set(n);
    ed.changed();
  });
  return field(ptr, label, control, help);
}

/** A choice among [value, label] pairs. */
export function selectField(ed, ptr, label, value, options, set, { help, rerender = false } = {}) {
  const id = nextId("sel");
  const control = h("select", { id });
  for (const [v, text] of options) control.append(h("option", { value: v }, text));
  control.value = value;
  control.addEventListener("change", () => { set(control.value); ed.changed(); if (rerender) ed.rerender(`${ptr}`); });
  return field(ptr, label, control, help);
}

/** A checkbox. */
export function checkField(ed, ptr, label, checked, set) {
  const id = nextId("chk");
  const control = h("input", { id, type: "checkbox", checked });
  control.addEventListener("change", () => { set(control.checked); ed.changed(); });
  return h("div", { class: "field check", "data-pointer": ptr }, control, h("label", { for: id }, label),
    h("p", { class: "field-error", hidden: true }));
}

/** A JSON value (an object when `object`), templates allowed inside its strings. */
export function jsonField(ed, ptr, label, value, set, { help, object = true, placeholder } = {}) {
  const id = nextId("json");
  const control = h("textarea", { id, class: "mono template", rows: "3", spellcheck: "false", placeholder });
  control.value = value === undefined ? "" : JSON.stringify(value, null, 2);
  control.addEventListener("input", () => {
    const raw = control.value.trim();
    if (raw === "") { markBad(ed, ptr, control, null); set(undefined); ed.changed(); return; }
    try {
      const v = JSON.parse(raw);
      if (object && (v === null || typeof v !== "object" || Array.isArray(v))) throw new Error("a JSON object is expected");
      markBad(ed, ptr, control, null);
      set(v);
    } catch (e) {
      markBad(ed, ptr, control, `not valid JSON: ${e.message}`);
    }
    ed.changed();
  });
  const f = field(ptr, label, control, help);
  if (ed.picker) ed.picker(control, ptr, f);
  return f;
}
