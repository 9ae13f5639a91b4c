// The flow builder: the pipeline's steps as connected cards down the page. Branch and parallel
// paths stand side by side, a loop's body and a step's error path (its fallback steps) sit inside
// their step; every card collapses. A "+" between cards (and "Add a step" at the end of every
// list) opens the chooser of constructs and connector actions. The editor edits the document in
// place; `onChange` tells the page it changed.

import { h, clear, nextId } from "../ui.js";
import { chooseStep } from "./chooser.js";
import { conditionField, selectField, textField } from "./fields.js";
import { actionFields, addPathButton, constructFields, pathHeader } from "./kinds.js";
import { KIND_LABEL, childLists, idProblems, kindOf, newStep } from "./model.js";

const setKey = (obj, key) => (v) => { if (v === undefined || v === "") delete obj[key]; else obj[key] = v; };

function summary(ed, step) {
  const kind = kindOf(step);
  if (kind === "action") {
    const c = ed.catalog[step.connector];
    const a = c && c.actions ? c.actions[step.action] : null;
    return `${c ? c.title : step.connector}: ${a ? a.title : step.action}`;
  }
  if (kind === "branch" || kind === "parallel") return `${(step.paths || []).length} path${(step.paths || []).length === 1 ? "" : "s"}`;
  if (kind === "for_each") return `over ${step.items || "…"}`;
  if (kind === "approval") return "until approved or rejected";
  if (kind === "wait") return step.until !== undefined ? `until ${step.until}` : `${step.seconds ?? "?"} s`;
  if (kind === "pipeline") return step.pipeline || "no pipeline chosen";
  if (kind === "stop") return `ends the run: ${step.status || "succeeded"}`;
  if (kind === "agent") return `${(step.tools || []).length} tool${(step.tools || []).length === 1 ? "" : "s"}: ${step.goal || "no goal yet"}`.slice(0, 80);
  return "";
}

export class FlowEditor {
  /**
   * opts: {catalog: {name: connector}, creds: [..], pipelines: [{id, name}], selfId,
   *        onChange(), cardTools(step, pointer) -> {header: [nodes], body: [nodes]} (optional),
   *        picker(control, pointer, fieldEl) (optional: the field picker of template inputs)}
   */
  constructor(opts) {
    Object.assign(this, { catalog: {}, creds: [], pipelines: [], selfId: null, onChange: () => {}, cardTools: null, picker: null }, opts);
    this.collapsed = new Set();
    this.forms = new Map(); // pointer of an action step -> its payload form
    this.bad = new Map(); // pointer -> message of a field whose text does not parse
    this.doc = null;
    this.roots = [];
  }

  changed() { this.onChange(); }

  /** Draw `doc` ([root element, key of the step list in doc, where] per root). */
  render(doc, roots) {
    if (doc) this.doc = doc;
    if (roots) this.roots = roots;
    this.forms = new Map();
    this.bad = new Map();
    for (const [el, key, where] of this.roots) {
      const steps = Array.isArray(this.doc[key]) ? this.doc[key] : [];
      const ensure = () => { if (!Array.isArray(this.doc[key])) this.doc[key] = steps; return steps; };
      clear(el, this.list(steps, `/${key}`, where, 0, ensure));
    }
  }

  /** Draw again, then put the focus back on the field (or the card) at `pointer`. */
  rerender(pointer) {
    this.render();
    if (!pointer) return;
    const esc = CSS.escape(pointer);
    const target = document.querySelector(`.field[data-pointer="${esc}"] :is(input, select, textarea)`)
      || document.querySelector(`.step-card[data-pointer="${esc}"] > header h3`);
    if (target) target.focus();
  }

  /** A step's id changed: its card says so (no redraw: a click elsewhere must still land). */
  renamed(ptr, before, after) {
    const card = document.querySelector(`.step-card[data-pointer="${CSS.escape(ptr)}"]`);
    if (!card) return;
    if (this.collapsed.delete(before)) this.collapsed.add(after);
    card.dataset.stepId = after;
    card.querySelector(":scope > header h3 .mono").textContent = after || "(no id)";
    const plus = card.previousElementSibling && card.previousElementSibling.querySelector("button");
    for (const b of [...card.querySelectorAll(":scope > header button[data-label]"), plus]) {
      if (!b || !b.dataset.label) continue;
      const label = b.dataset.label.replace("{id}", after);
      b.setAttribute("aria-label", label);
      if (b.title) b.title = label;
    }
  }

  /** Problems the API would report anyway, found before saving. */
  problems() {
    const out = idProblems(this.doc);
    for (const [pointer, message] of this.bad) out.push({ pointer, message });
    for (const f of this.forms.values()) for (const p of f.invalid()) out.push({ pointer: p.replace(/#extra$/, ""), message: "not valid JSON" });
    return out;
  }

  async add(steps, index, where, ensure) {
    const choice = await chooseStep(this.catalog, where);
    if (!choice) return;
    const step = newStep(this.doc, choice.kind, choice);
    (ensure ? ensure() : steps).splice(index, 0, step);
    this.changed();
    this.render();
    const h3 = document.querySelector(`.step-card[data-step-id="${CSS.escape(step.id)}"] > header h3`);
    if (h3) { h3.scrollIntoView({ block: "center" }); h3.focus(); }
  }

  addButton(steps, index, where, ensure, { before = null } = {}) {
    if (before) {
      return h("li", { class: "flow-add" }, h("button", {
        type: "button", class: "secondary small plus", "aria-label": `Add a step before ${before}`, title: `Add a step before ${before}`, "data-label": "Add a step before {id}",
        on: { click: () => this.add(steps, index, `before ${before}`, ensure) },
      }, "+"));
    }
    return h("li", { class: "flow-add flow-end" }, h("button", {
      type: "button", class: "secondary small", "aria-label": `Add a step ${where}`,
      on: { click: () => this.add(steps, index, where, ensure) },
    }, "+ Add a step"));
  }

  /** One list of steps: cards joined by "+" buttons, "Add a step" at the end. */
  list(steps, pointer, where, depth, ensure) {
    const ol = h("ol", { class: `flow${depth ? " nested" : ""}`, "data-list": pointer });
    steps.forEach((s, i) => {
      ol.append(this.addButton(steps, i, where, ensure, { before: s.id || `step ${i + 1}` }));
      ol.append(this.card(s, steps, i, `${pointer}/${i}`, depth));
    });
    if (!steps.length) ol.append(h("li", { class: "flow-empty muted small" }, "no step yet"));
    ol.append(this.addButton(steps, steps.length, where, ensure));
    return ol;
  }

  header(step, steps, i, ptr, depth, bodyId, tools) {
    const id = step.id || "(no id)";
    const collapsed = this.collapsed.has(step.id);
    const move = (d) => {
      const j = i + d;
      if (j < 0 || j >= steps.length) return;
      [steps[i], steps[j]] = [steps[j], steps[i]];
      this.changed();
      this.rerender(ptr.replace(/\d+$/, String(j)));
    };
    const toggle = h("button", {
      type: "button", class: "secondary small toggle", "aria-expanded": collapsed ? "false" : "true", "aria-controls": bodyId,
      "aria-label": `${collapsed ? "Expand" : "Collapse"} ${id}`, "data-label": `${collapsed ? "Expand" : "Collapse"} {id}`,
      on: {
        click: () => {
          if (this.collapsed.has(step.id)) this.collapsed.delete(step.id); else this.collapsed.add(step.id);
          this.rerender(ptr);
        },
      },
    }, collapsed ? "▸" : "▾");
    return h("header", {},
      toggle,
      h("h3", { tabindex: "-1" }, depth === 0 && ptr.startsWith("/steps/") ? `Step ${i + 1}: ` : "",
        h("span", { class: "mono" }, id), " ", h("span", { class: `kind kind-${kindOf(step)}` }, KIND_LABEL[kindOf(step)] || step.type),
        collapsed ? h("span", { class: "muted small summary" }, ` ${summary(this, step)}`) : null),
      ...(tools.header || []),
      h("button", { type: "button", class: "secondary small", "aria-label": `Move step ${id} up`, "data-label": "Move step {id} up", disabled: i === 0, on: { click: () => move(-1) } }, "↑"),
      h("button", { type: "button", class: "secondary small", "aria-label": `Move step ${id} down`, "data-label": "Move step {id} down", disabled: i === steps.length - 1, on: { click: () => move(1) } }, "↓"),
      h("button", { type: "button", class: "danger small", "aria-label": `Remove step ${id}`, "data-label": "Remove step {id}", on: { click: () => { steps.splice(i, 1); this.changed(); this.render(); } } }, "Remove"));
  }

  /** The common fields: id, label, condition and what a failure does. */
  common(step, ptr, kindGrid) {
    const idField = textField(this, `${ptr}/id`, "Step id", step.id, (v) => { step.id = v.trim(); },
      { req: true, help: "a-z, 0-9 and _, unique in the pipeline: later steps refer to it" });
    const input = idField.querySelector("input");
    Object.assign(input, { maxLength: 40 });
    input.classList.add("mono");
    let shown = step.id;
    input.addEventListener("change", () => { this.renamed(ptr, shown, step.id); shown = step.id; });
    const onError = Array.isArray(step.on_error) ? "fallback" : step.on_error || "fail";
    return h("div", { class: "grid2" },
      idField,
      textField(this, `${ptr}/name`, "Label (optional)", step.name, setKey(step, "name"), { placeholder: summary(this, step) }),
      ...kindGrid,
      conditionField(this, `${ptr}/if`, "Run only if (optional)", step.if, setKey(step, "if")),
      selectField(this, `${ptr}/on_error`, "If it fails", onError,
        [["fail", "fail the run"], ["continue", "record the error and go on"], ["fallback", "run an error path"]],
        (v) => {
          if (v === "fallback") step.on_error = Array.isArray(step.on_error) ? step.on_error : [];
          else if (v === "fail") delete step.on_error;
          else step.on_error = v;
        }, { rerender: true }));
  }

  /** The nested step lists: paths side by side, a loop's body, the error path. */
  nested(step, ptr, depth) {
    const out = [];
    const lists = childLists(step, ptr);
    if (step.type === "branch" || step.type === "parallel") {
      const cols = lists.filter((l) => l.key !== "on_error").map((l) => h("section", { class: `path${l.key === "default" ? " default" : ""}`, "data-path": l.key },
        l.path !== undefined ? pathHeader(this, step, l.path, ptr) : h("h4", {}, "Otherwise (no path matched)"),
        this.list(l.steps, l.pointer, `in ${step.id} ${l.key === "default" ? "otherwise" : `path ${l.title}`}`, depth + 1)));
      out.push(h("div", { class: "paths" }, cols), addPathButton(this, step, ptr));
    } else if (step.type === "for_each") {
      const body = lists.find((l) => l.key === "steps");
      out.push(h("section", { class: "loop-body", "data-path": "steps" }, h("h4", {}, "For each item"),
        this.list(body.steps, body.pointer, `in the loop ${step.id}`, depth + 1)));
    }
    const err = lists.find((l) => l.key === "on_error");
    if (err) {
      out.push(h("section", { class: "error-path", "data-path": "on_error" }, h("h4", {}, "On error"),
        h("p", { class: "help" }, "These steps run when the step fails, with {{ error }} in scope; then the run goes on."),
        this.list(err.steps, err.pointer, `to the error path of ${step.id}`, depth + 1)));
    }
    return out;
  }

  card(step, steps, i, ptr, depth) {
    const kind = kindOf(step);
    const bodyId = nextId("body");
    const tools = this.cardTools ? this.cardTools(step, ptr) : {};
    const action = kind === "action" ? actionFields(this, step, ptr) : { grid: [], body: [] };
    const body = h("div", { class: "card-body", id: bodyId, hidden: this.collapsed.has(step.id) },
      this.common(step, ptr, action.grid),
      ...action.body,
      kind === "action" ? null : h("div", { class: "grid2 construct" }, constructFields(this, step, ptr)),
      ...this.nested(step, ptr, depth),
      ...(tools.body || []));
    return h("li", { class: `step-card kind-${kind}`, "data-step-id": step.id, "data-pointer": ptr, "data-kind": kind },
      this.header(step, steps, i, ptr, depth, bodyId, tools), body);
  }
}
