// The choices of an action's field (the catalog's `options`: a server's models, an MCP server's
// tools), loaded from the connector through POST /api/v1/connectors/<c>/actions/<a>/options/<f>
// with the step's credential. A field with a list shows a select (plus "other" to type a value
// or a template); when the list cannot be loaded the text input stays and a small note says why.
// The field says where it is in `data-options`: loading, ready or failed.

import { post } from "../api.js";
import { h, nextId } from "../ui.js";

const OTHER = "\u0000other";
const cache = new Map(); // [connector, action, field, credential] -> Promise of the choices

const enc = encodeURIComponent;

/** The choices (a Promise, asked once per connector, action, field and credential). */
export function loadOptions(connector, action, field, credential, payload) {
  const key = JSON.stringify([connector, action, field, credential || ""]);
  if (!cache.has(key)) {
    const body = { payload: payload || {} };
    if (credential) body.credential = credential;
    const p = post(`/api/v1/connectors/${enc(connector)}/actions/${enc(action)}/options/${enc(field)}`, body)
      .then((r) => r.options || []);
    p.catch(() => cache.delete(key)); // asked again next time
    cache.set(key, p);
  }
  return cache.get(key);
}

/** Forget the loaded lists (a credential was added, the user asked to reload). */
export function forgetOptions() { cache.clear(); }

/**
 * Give the field `fieldEl` (label, a text input or textarea) a select of the choices `load()`
 * answers. `onChoice(choice, byUser)` hears the chosen choice ({value, label, schema?}, null for
 * a typed value) once the list is there and whenever the user picks another.
 */
export function attachOptions(fieldEl, load, { onChoice = () => {}, what = "the list" } = {}) {
  const input = fieldEl.querySelector("input[type=text], textarea");
  const label = fieldEl.querySelector(":scope > label");
  if (!input || fieldEl.dataset.options) return;
  const select = h("select", { id: nextId("opt"), class: "options-select", hidden: true, "aria-describedby": input.getAttribute("aria-describedby") });
  const note = h("small", { class: "help options-note", "aria-live": "polite" }, `Loading ${what}…`);
  const reload = h("button", { type: "button", class: "secondary small options-reload", hidden: true, "aria-label": `Reload ${what}` }, "↻");
  input.after(select);
  select.after(h("div", { class: "options-bar" }, note, reload));
  fieldEl.dataset.options = "loading";
  let choices = [];

  const typed = (focus) => {
    select.value = OTHER;
    input.hidden = false;
    if (label) label.htmlFor = input.id;
    if (focus) input.focus();
  };
  const setValue = (v) => {
    input.value = v;
    input.dispatchEvent(new Event("input", { bubbles: true }));
  };
  select.addEventListener("change", () => {
    if (select.value === OTHER) { typed(true); onChoice(null, true); return; }
    input.hidden = true;
    const choice = choices[Number(select.value)] || null;
    setValue(choice ? String(choice.value) : "");
    onChoice(choice, true);
  });
  reload.addEventListener("click", () => { forgetOptions(); fieldEl.removeAttribute("data-options"); select.remove(); note.parentElement.remove(); attachOptions(fieldEl, load, { onChoice, what }); });

  load().then((found) => {
    choices = found;
    select.replaceChildren(h("option", { value: "" }, "choose…"),
      ...found.map((c, i) => h("option", { value: String(i), title: c.description || "" }, c.label === String(c.value) ? c.label : `${c.label} (${c.value})`)),
      h("option", { value: OTHER }, "other (type a value or a template)…"));
    const i = found.findIndex((c) => String(c.value) === input.value);
    select.hidden = false;
    reload.hidden = false;
    if (label) label.htmlFor = select.id;
    if (i >= 0) { select.value = String(i); input.hidden = true; onChoice(found[i], false); } else if (input.value) typed(false); else { select.value = ""; input.hidden = true; }
    note.textContent = found.length ? `${found.length} to choose from` : "none offered: type a value";
    if (!found.length) typed(false);
    fieldEl.dataset.options = "ready";
  }, (e) => {
    note.textContent = `Could not load ${what} (${e.message}): type the value.`;
    note.classList.add("warn");
    reload.hidden = false;
    fieldEl.dataset.options = "failed";
  });
}
