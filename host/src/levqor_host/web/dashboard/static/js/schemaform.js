// Forms generated from JSON Schema (an action's payload, a connector's credentials):
// required fields, enums, types, descriptions and examples; every field carries the JSON
// pointer of its value (data-pointer) so a 422 problem from the API lands at that field.
// An object schema with alternatives (oneOf/anyOf of object schemas, say an API key or an
// OAuth token) is a choice between them, each showing its own fields; a schema the form
// cannot render is edited as JSON.

import { h, nextId } from "./ui.js";

const NUMERIC = /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/;

function typeOf(schema) {
  if (!schema || typeof schema !== "object") return "any";
  if (Array.isArray(schema.enum)) return "enum";
  if ("const" in schema) return "const";
  let t = schema.type;
  if (Array.isArray(t)) {
    const real = t.filter((x) => x !== "null");
    t = real.length === 1 ? real[0] : "json";
  }
  if (t === "string" || t === "integer" || t === "number" || t === "boolean") return t;
  return "json";
}

function exampleFor(schema, example) {
  if (example !== undefined && example !== null && typeof example !== "object") return String(example);
  if (Array.isArray(schema.examples) && schema.examples.length) {
    const e = schema.examples[0];
    return typeof e === "object" ? JSON.stringify(e) : String(e);
  }
  if (schema.default !== undefined) return typeof schema.default === "object" ? JSON.stringify(schema.default) : String(schema.default);
  return "";
}

function hintText(schema) {
  const bits = [];
  const t = typeOf(schema);
  if (t === "integer") bits.push("a whole number");
  else if (t === "number") bits.push("a number");
  else if (t === "json") bits.push(schema.type === "array" ? "a JSON list" : schema.type === "object" ? "a JSON object" : "JSON");
  if (schema.format) bits.push(schema.format === "uri" ? "a URL" : schema.format);
  if (schema.minimum !== undefined) bits.push(`≥ ${schema.minimum}`);
  if (schema.maximum !== undefined) bits.push(`≤ ${schema.maximum}`);
  if (schema.maxLength !== undefined && t === "string") bits.push(`at most ${schema.maxLength} characters`);
  return bits.join(", ");
}

/**
 * Build the fields of an object schema.
 *   schema:  the object's JSON Schema
 *   value:   the current object (edited in place through onChange)
 *   pointer: the JSON pointer of the object in the document ("/steps/0/payload")
 *   opts:    {example: {}, onChange(value), secretAlways: false, idPrefix}
 * Returns {element, value(): current object, invalid(): [pointer] of fields whose text does not parse}.
 */
export function objectForm(schema, value, pointer, opts = {}) {
  const variants = variantsOf(schema);
  if (variants) return variantForm(variants, value, pointer, opts);
  const obj = value && typeof value === "object" && !Array.isArray(value) ? { ...value } : {};
  const props = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const example = opts.example || {};
  const bad = new Set();
  const changed = () => opts.onChange && opts.onChange(obj);
  const wrap = h("div", { class: "schema-form" });

  const names = Object.keys(props);
  if (!names.length) {
    // a free-form object (or one the form cannot render): edit it as JSON
    wrap.append(jsonField(opts.jsonLabel || "Payload (JSON)", obj, pointer, (v, ok) => {
      if (ok) { for (const k of Object.keys(obj)) delete obj[k]; Object.assign(obj, v); bad.delete(pointer); } else bad.add(pointer);
      changed();
    }, true, "a JSON object"));
    return { element: wrap, value: () => obj, invalid: () => [...bad] };
  }

  for (const name of names) {
    const ps = props[name] || {};
    const ptr = `${pointer}/${name.replace(/~/g, "~0").replace(/\//g, "~1")}`;
    const id = nextId(opts.idPrefix || "f");
    const t = typeOf(ps);
    const isReq = required.has(name);
    const descId = `${id}-desc`;
    const errId = `${id}-err`;
    const label = h("label", { for: id }, ps.title || name,
      ps.title && ps.title !== name ? h("span", { class: "muted small" }, ` (${name})`) : null,
      isReq ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null,
      isReq ? h("span", { class: "visually-hidden" }, " (required)") : null);
    const hint = hintText(ps);
    const desc = (ps.description || hint)
      ? h("small", { class: "help", id: descId }, ps.description || "", ps.description && hint ? ` (${hint})` : hint)
      : null;
    const describedBy = [desc ? descId : null, errId].filter(Boolean).join(" ");
    const cur = obj[name];
    const set = (v) => {
      if (v === undefined) delete obj[name]; else obj[name] = v;
      changed();
    };
    let control;
    if (t === "enum") {
      control = h("select", { id, name, "aria-describedby": describedBy, required: isReq });
      control.append(h("option", { value: "" }, isReq ? "choose…" : "(not set)"));
      ps.enum.forEach((v, i) => control.append(h("option", { value: String(i) }, JSON.stringify(v).replace(/^"|"$/g, ""))));
      const idx = ps.enum.findIndex((v) => JSON.stringify(v) === JSON.stringify(cur));
      control.value = idx >= 0 ? String(idx) : "";
      control.addEventListener("change", () => set(control.value === "" ? undefined : ps.enum[Number(control.value)]));
    } else if (t === "const") {
      control = h("input", { id, name, readonly: true, value: JSON.stringify(ps.const), "aria-describedby": describedBy });
      if (isReq && cur === undefined) obj[name] = ps.const;
    } else if (t === "boolean") {
      control = h("select", { id, name, "aria-describedby": describedBy, required: isReq });
      control.append(h("option", { value: "" }, isReq ? "choose…" : `(not set${ps.default !== undefined ? `: ${ps.default ? "yes" : "no"}` : ""})`),
        h("option", { value: "true" }, "yes"), h("option", { value: "false" }, "no"));
      control.value = cur === true ? "true" : cur === false ? "false" : "";
      control.addEventListener("change", () => set(control.value === "" ? undefined : control.value === "true"));
    } else if (t === "integer" || t === "number" || t === "string") {
      const secret = ps.writeOnly || opts.secretAlways;
      const long = t === "string" && !secret && !ps.format && !ps.pattern && (ps.maxLength === undefined || ps.maxLength > 200);
      const attrs = {
        id, name, "aria-describedby": describedBy, required: isReq,
        placeholder: (() => { const ex = exampleFor(ps, example[name]); return ex ? `e.g. ${ex}` : null; })(),
        maxlength: ps.maxLength, autocomplete: secret ? "new-password" : "off", spellcheck: "false",
      };
      if (t !== "string") attrs.inputmode = t === "integer" ? "numeric" : "decimal";
      control = long ? h("textarea", { ...attrs, rows: "2" }) : h("input", { ...attrs, type: secret ? "password" : "text" });
      control.value = cur === undefined || cur === null ? "" : typeof cur === "object" ? JSON.stringify(cur) : String(cur);
      control.addEventListener("input", () => {
        const raw = control.value;
        if (raw === "") return set(undefined);
        // numbers stay numbers; anything else (a {{ template }}) is kept as text
        if (t !== "string" && NUMERIC.test(raw.trim())) return set(Number(raw.trim()));
        set(raw);
      });
    } else if (listShape(ps) && (cur === undefined || Array.isArray(cur))) {
      wrap.append(listField(listShape(ps), ps.title || name, cur, ptr, set, isReq, ps.description || hint, id));
      continue;
    } else {
      const field = jsonField(ps.title || name, cur, ptr, (v, ok) => {
        if (ok) { bad.delete(ptr); set(v); } else bad.add(ptr);
      }, isReq, ps.description || hint, exampleFor(ps, example[name]));
      wrap.append(field);
      continue;
    }
    wrap.append(h("div", { class: "field", "data-pointer": ptr }, label, control, desc,
      h("p", { class: "field-error", id: errId, hidden: true })));
  }
  // values the schema does not name (kept, editable as JSON)
  const extra = Object.fromEntries(Object.entries(obj).filter(([k]) => !(k in props)));
  if (Object.keys(extra).length && schema.additionalProperties !== false) {
    wrap.append(jsonField("Other fields (JSON)", extra, pointer, (v, ok) => {
      if (!ok || typeof v !== "object" || Array.isArray(v) || v === null) { bad.add(pointer + "#extra"); return; }
      bad.delete(pointer + "#extra");
      for (const k of Object.keys(obj)) if (!(k in props)) delete obj[k];
      Object.assign(obj, v);
      changed();
    }, false, "fields beyond the schema's"));
  }
  return { element: wrap, value: () => obj, invalid: () => [...bad] };
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function constProps(schema) {
  return Object.entries(schema.properties || {}).filter(([, ps]) => isObject(ps) && "const" in ps);
}

/**
 * The alternatives of an object schema written with oneOf (else anyOf), each merged with the
 * properties and required names of the schema around it:
 * [{title, description, schema}], or null when there are none or one the form cannot render
 * (not an object schema, nested alternatives, a $ref, no field at all).
 */
export function variantsOf(schema) {
  if (!isObject(schema)) return null;
  const alts = Array.isArray(schema.oneOf) ? schema.oneOf : Array.isArray(schema.anyOf) ? schema.anyOf : null;
  if (!alts || !alts.length) return null;
  if (schema.type !== undefined && schema.type !== "object") return null;
  const outer = { ...schema };
  delete outer.oneOf;
  delete outer.anyOf;
  const out = [];
  for (const [i, alt] of alts.entries()) {
    if (!isObject(alt) || "$ref" in alt || alt.oneOf || alt.anyOf || alt.allOf || alt.not) return null;
    if (alt.type !== undefined && alt.type !== "object") return null;
    const properties = { ...(outer.properties || {}), ...(alt.properties || {}) };
    if (!Object.keys(properties).length) return null;
    const required = [...new Set([...(outer.required || []), ...(alt.required || [])])];
    const merged = { ...outer, ...alt, type: "object", properties, required };
    if (alt.additionalProperties === undefined && outer.additionalProperties !== undefined) merged.additionalProperties = outer.additionalProperties;
    // a variant without a title is named by its discriminator, else by the fields it requires
    const consts = constProps(alt);
    const named = (alt.required || []).map((n) => (properties[n] && properties[n].title) || n);
    const title = alt.title
      || (consts.length ? consts.map(([, ps]) => String(ps.const)).join(" / ") : "")
      || (named.length ? named.join(" + ") : `Option ${i + 1}`);
    out.push({ title, description: alt.description || "", schema: merged });
  }
  return out;
}

/** The variant a value was made with: its discriminators match and its required fields are there. */
export function matchVariant(variants, value) {
  const v = isObject(value) ? value : {};
  const score = (variant) => {
    const s = variant.schema;
    if (constProps(s).some(([n, ps]) => n in v && JSON.stringify(v[n]) !== JSON.stringify(ps.const))) return -1;
    if (!(s.required || []).every((n) => n in v)) return 0;
    return 1 + Object.keys(v).filter((k) => k in s.properties).length;
  };
  let best = 0;
  variants.forEach((variant, i) => { if (score(variant) > score(variants[best])) best = i; });
  return best;
}

/** ``value`` reduced to what ``schema`` names (a variant's own fields), its discriminators set. */
export function variantValue(schema, value) {
  const v = isObject(value) ? value : {};
  const out = {};
  for (const k of Object.keys(v)) if (k in schema.properties) out[k] = v[k];
  for (const [n, ps] of constProps(schema)) out[n] = ps.const;
  return out;
}

function variantForm(variants, value, pointer, opts) {
  let current = matchVariant(variants, value);
  let sub = null;
  const group = nextId(opts.idPrefix ? `${opts.idPrefix}-kind` : "kind");
  const help = h("small", { class: "help", id: `${group}-desc` });
  const fields = h("div", { class: "variant-fields" });
  const wrap = h("div", { class: "schema-form variant-form" });
  const result = () => variantValue(variants[current].schema, sub.value());
  const changed = () => opts.onChange && opts.onChange(result());
  const render = (values) => {
    const v = variants[current];
    sub = objectForm(v.schema, variantValue(v.schema, values), pointer, { ...opts, onChange: changed });
    help.textContent = v.description;
    help.hidden = !v.description;
    wrap.dataset.variant = v.title;
    fields.replaceChildren(sub.element);
  };
  const radios = variants.map((v, i) => {
    const id = `${group}-${i}`;
    const input = h("input", { type: "radio", id, name: group, value: String(i), checked: i === current, "aria-describedby": help.id });
    input.addEventListener("change", () => {
      if (!input.checked) return;
      const before = sub.value();
      current = i;
      render(before); // only fields the chosen variant names survive the switch
      changed();
    });
    return h("span", { class: "choice" }, input, h("label", { for: id }, v.title));
  });
  wrap.append(h("fieldset", { class: "variant-choice" }, h("legend", {}, opts.variantLegend || "Kind"), ...radios, help), fields);
  render(value);
  return { element: wrap, value: result, invalid: () => sub.invalid() };
}

/**
 * How a list of texts (or of small objects of texts, or either: classify's labels, each a string
 * or {label, description}) is edited as rows: {cols: [{name, title}], strings: whether a row with
 * only its first column is a plain string}; null for other arrays (edited as JSON).
 */
export function listShape(schema) {
  if (!isObject(schema) || schema.type !== "array" || !isObject(schema.items)) return null;
  const items = schema.items;
  const textObject = (o) => isObject(o) && o.type === "object" && isObject(o.properties) && Object.keys(o.properties).length
    && Object.values(o.properties).every((p) => isObject(p) && p.type === "string");
  const alts = Array.isArray(items.anyOf) ? items.anyOf : Array.isArray(items.oneOf) ? items.oneOf : null;
  if (!alts) {
    if (items.type === "string" && !items.enum) return { cols: [{ name: null, title: "value" }], strings: true };
    if (textObject(items)) return { cols: Object.entries(items.properties).map(([n, p]) => ({ name: n, title: p.title || n })), strings: false };
    return null;
  }
  const str = alts.find((a) => isObject(a) && a.type === "string");
  const obj = alts.find(textObject);
  if (alts.length > 2 || !obj || (alts.length === 2 && !str)) return null;
  return { cols: Object.entries(obj.properties).map(([n, p]) => ({ name: n, title: p.title || n })), strings: !!str };
}

function listField(shape, title, value, pointer, set, isReq, help, id) {
  const rows = (Array.isArray(value) ? value : []).map((v) => (isObject(v) ? { ...v } : { [shape.cols[0].name ?? ""]: v === undefined ? "" : String(v) }));
  const list = h("ol", { class: "list-rows" });
  const key = (c) => c.name ?? "";
  const emit = () => {
    const out = [];
    for (const r of rows) {
      const filled = shape.cols.filter((c) => (r[key(c)] ?? "") !== "");
      if (!filled.length) continue;
      if (shape.strings && filled.length === 1 && filled[0] === shape.cols[0]) out.push(r[key(shape.cols[0])]);
      else out.push(Object.fromEntries(filled.map((c) => [c.name, r[key(c)]])));
    }
    set(out.length || Array.isArray(value) ? out : undefined);
  };
  const draw = () => {
    list.replaceChildren(...rows.map((r, i) => h("li", { class: "list-row" },
      shape.cols.map((c, j) => {
        const input = h("input", { type: "text", id: i === 0 && j === 0 ? id : null, "aria-label": `${title} ${i + 1}${shape.cols.length > 1 ? ` ${c.title}` : ""}`, placeholder: c.title, autocomplete: "off", spellcheck: "false", value: r[key(c)] ?? "" });
        input.addEventListener("input", () => { r[key(c)] = input.value; emit(); });
        return input;
      }),
      h("button", { type: "button", class: "secondary small", "aria-label": `Remove ${title} ${i + 1}`, on: { click: () => { rows.splice(i, 1); draw(); emit(); } } }, "×"))));
  };
  const add = h("button", { type: "button", class: "secondary small", on: { click: () => { rows.push({}); draw(); list.lastChild.querySelector("input").focus(); } } }, `Add ${shape.cols.length > 1 ? "a row" : "one"}`);
  if (!rows.length) rows.push({});
  draw();
  return h("div", { class: "field list-field", "data-pointer": pointer },
    h("label", { for: id }, title, isReq ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null),
    list, add, help ? h("small", { class: "help" }, help) : null, h("p", { class: "field-error", hidden: true }));
}

function jsonField(title, value, pointer, onValue, isReq, help, example) {
  const id = nextId("j");
  const errId = `${id}-err`;
  const helpId = `${id}-help`;
  const ta = h("textarea", {
    id, class: "mono", rows: "3", spellcheck: "false", required: isReq,
    "aria-describedby": `${help ? helpId + " " : ""}${errId}`,
    placeholder: example ? `e.g. ${example}` : null,
  });
  ta.value = value === undefined ? "" : JSON.stringify(value, null, 2);
  const err = h("p", { class: "field-error", id: errId, hidden: true });
  ta.addEventListener("input", () => {
    if (ta.value.trim() === "") { err.hidden = true; ta.removeAttribute("aria-invalid"); onValue(undefined, true); return; }
    try {
      const v = JSON.parse(ta.value);
      err.hidden = true;
      ta.removeAttribute("aria-invalid");
      onValue(v, true);
    } catch (e) {
      err.textContent = `Not valid JSON: ${e.message}`;
      err.hidden = false;
      ta.setAttribute("aria-invalid", "true");
      onValue(undefined, false);
    }
  });
  return h("div", { class: "field", "data-pointer": pointer },
    h("label", { for: id }, title, isReq ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null),
    ta, help ? h("small", { class: "help", id: helpId }, help) : null, err);
}

/** Remove the messages a previous showProblems() put on the fields inside `root`. */
export function clearProblems(root) {
  for (const el of root.querySelectorAll(".field-error[data-from-api]")) { el.hidden = true; el.textContent = ""; el.removeAttribute("data-from-api"); }
  for (const el of root.querySelectorAll("[aria-invalid][data-from-api]")) { el.removeAttribute("aria-invalid"); el.removeAttribute("data-from-api"); }
}

function fieldFor(root, pointer, message) {
  const find = (p) => root.querySelector(`.field[data-pointer="${CSS.escape(p)}"]`);
  let el = find(pointer);
  if (el) return el;
  const m = /'([^']+)' is a required property/.exec(message || "");
  if (m) {
    el = find(`${pointer}/${m[1]}`);
    if (el) return el;
  }
  const parts = pointer.split("/");
  while (parts.length > 1) {
    parts.pop();
    el = find(parts.join("/"));
    if (el) return el;
  }
  return null;
}

/**
 * Show API problems ([{pointer, message}]) at their fields. Returns the problems no field
 * took (for a summary) and focuses the first field in error.
 */
export function showProblems(root, problems, { pointerPrefix = "" } = {}) {
  clearProblems(root);
  const left = [];
  let first = null;
  for (const p of problems || []) {
    const field = fieldFor(root, pointerPrefix + (p.pointer || ""), p.message);
    if (!field) { left.push(p); continue; }
    let err = field.querySelector(":scope > .field-error");
    if (!err) { err = h("p", { class: "field-error" }); field.append(err); }
    err.textContent = err.dataset.fromApi && err.textContent ? `${err.textContent}; ${p.message}` : p.message;
    err.dataset.fromApi = "1";
    err.hidden = false;
    err.setAttribute("role", "alert");
    const control = field.querySelector("input, select, textarea");
    if (control) {
      control.setAttribute("aria-invalid", "true");
      control.dataset.fromApi = "1";
      if (!first) first = control;
    }
  }
  if (first) first.focus();
  return left;
}
