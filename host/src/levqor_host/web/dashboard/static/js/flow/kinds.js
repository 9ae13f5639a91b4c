// The fields of each kind of step: an action's connector, action, credential and payload form
// (from the action's JSON Schema); a branch's and a parallel's paths; a loop's items; a wait's
// duration, time or approval; a sub-pipeline's id and input; a stop's status and output; an
// agent's (flow/agent.js). A field the action lists in `options` gets its choices from the
// connector (flow/options.js).

import { qs } from "../api.js";
import { objectForm } from "../schemaform.js";
import { h, nextId } from "../ui.js";
import { countField, checkField, conditionField, field, jsonField, selectField, textField } from "./fields.js";
import { attachOptions, loadOptions } from "./options.js";
import { agentFields } from "./agent.js";

const setKey = (obj, key) => (v) => { if (v === undefined || v === "") delete obj[key]; else obj[key] = v; };

/** The credential of a step (or an agent's tool): the user's of `connector`; `onChange` after a change. */
export function credentialField(ed, step, ptr, connector, { onChange = null } = {}) {
  const id = nextId("cred");
  const sel = h("select", { id });
  const mine = ed.creds.filter((c) => c.connector === connector.name);
  sel.append(h("option", { value: "" }, connector.credentials_required ? "choose…" : "(none)"));
  for (const c of mine) sel.append(h("option", { value: c.name }, c.name));
  if (step.credential && !mine.some((c) => c.name === step.credential)) {
    sel.append(h("option", { value: step.credential }, `${step.credential} (not added yet)`));
  }
  sel.value = step.credential || "";
  sel.addEventListener("change", () => { setKey(step, "credential")(sel.value); ed.changed(); if (onChange) onChange(); });
  const missing = step.credential && !mine.some((c) => c.name === step.credential);
  const link = h("a", { href: `/credentials${qs({ connector: connector.name, name: step.credential || "" })}` },
    missing ? `Add the ${connector.title} credential "${step.credential}"` : `Add a ${connector.title} credential`);
  const f = field(`${ptr}/credential`, "Credential", sel, null, { req: connector.credentials_required });
  f.insertBefore(h("small", { class: "help" }, link), f.lastChild);
  return f;
}

/** The actions a step can use (an agent's turn action is hidden): [[name, action]]. */
export const visibleActions = (connector) => Object.entries((connector && connector.actions) || {}).filter(([, a]) => !a.hidden);

/** The connectors with an action a step can use. */
export const stepConnectors = (catalog) => Object.values(catalog).filter((c) => visibleActions(c).length);

/**
 * The payload property a choice's `schema` describes (an MCP tool's `arguments`): it gets a form
 * generated from that schema once such a choice is made.
 */
const SCHEMA_TARGETS = ["arguments", "input"];

/** Fields listed in the action's options get their choices from the connector. */
function payloadOptions(ed, step, ptr, action, form) {
  for (const name of action.options || []) {
    const f = form.element.querySelector(`:scope > .field[data-pointer="${CSS.escape(`${ptr}/payload/${name}`)}"]`);
    if (!f) continue;
    const target = SCHEMA_TARGETS.find((t) => t !== name && action.payload.properties && t in action.payload.properties);
    const targetEl = target ? form.element.querySelector(`:scope > .field[data-pointer="${CSS.escape(`${ptr}/payload/${target}`)}"]`) : null;
    let generated = null;
    const onChoice = (choice, byUser) => {
      if (generated) { generated.remove(); generated = null; ed.forms.delete(`${ptr}/payload/${target}`); }
      if (!targetEl) return;
      const schema = choice && choice.schema && choice.schema.properties ? choice.schema : null;
      targetEl.hidden = !!schema;
      if (!schema) return;
      if (byUser) step.payload[target] = {};
      const sub = objectForm(schema, step.payload[target], `${ptr}/payload/${target}`, {
        idPrefix: nextId("arg"),
        onChange: (v) => { step.payload[target] = v; ed.changed(); },
      });
      step.payload[target] = sub.value();
      ed.forms.set(`${ptr}/payload/${target}`, sub);
      generated = h("fieldset", { class: "choice-schema", "data-pointer": `${ptr}/payload/${target}` },
        h("legend", {}, `${target} of ${choice.label}`), choice.description ? h("p", { class: "help" }, choice.description) : null, sub.element);
      targetEl.after(generated);
      if (ed.picker) {
        for (const el of sub.element.querySelectorAll("input[type=text], textarea")) {
          const fe = el.closest(".field");
          if (fe) ed.picker(el, fe.dataset.pointer, fe);
        }
      }
      if (byUser) ed.changed();
    };
    attachOptions(f, () => loadOptions(step.connector, step.action, name, step.credential, step.payload), { onChoice, what: `the ${name} list` });
  }
}

/** Connector and action selects, the credential, and the payload form. */
export function actionFields(ed, step, ptr) {
  const connector = ed.catalog[step.connector];
  const action = connector ? (connector.actions || {})[step.action] : null;
  const cs = h("select", { id: nextId("con"), required: true });
  if (!connector) cs.append(h("option", { value: step.connector }, `${step.connector} (not installed)`));
  for (const c of stepConnectors(ed.catalog)) cs.append(h("option", { value: c.name }, c.title));
  if (connector && !visibleActions(connector).length) cs.append(h("option", { value: connector.name }, connector.title));
  cs.value = step.connector;
  cs.addEventListener("change", () => {
    step.connector = cs.value;
    const c = ed.catalog[cs.value];
    step.action = c && visibleActions(c).length ? visibleActions(c)[0][0] : "";
    step.payload = {};
    delete step.credential;
    ed.changed();
    ed.rerender(ptr);
  });
  const as = h("select", { id: nextId("act"), required: true });
  if (connector) for (const [n, a] of visibleActions(connector)) as.append(h("option", { value: n }, a.title));
  if (!action) as.append(h("option", { value: step.action }, `${step.action} (unknown)`));
  else if (action.hidden) as.append(h("option", { value: step.action }, action.title || step.action));
  as.value = step.action;
  as.addEventListener("change", () => { step.action = as.value; step.payload = {}; ed.changed(); ed.rerender(ptr); });

  const selects = [field(`${ptr}/connector`, "Connector", cs), field(`${ptr}/action`, "Action", as),
    connector && connector.credentials
      ? credentialField(ed, step, ptr, connector, { onChange: action && (action.options || []).length ? () => ed.rerender(`${ptr}/credential`) : null })
      : null];
  if (!action) {
    return { grid: selects, body: [h("p", { class: "notice bad" }, `Connector ${step.connector} or action ${step.action} is not installed here.`)] };
  }
  const form = objectForm(action.payload, step.payload, `${ptr}/payload`, {
    example: action.example,
    idPrefix: nextId("p"),
    onChange: (v) => { step.payload = v; ed.changed(); },
  });
  step.payload = form.value();
  ed.forms.set(ptr, form);
  payloadOptions(ed, step, ptr, action, form);
  if (ed.picker) {
    for (const el of form.element.querySelectorAll("input[type=text], textarea")) {
      const f = el.closest(".field");
      if (f) ed.picker(el, f.dataset.pointer, f);
    }
  }
  return {
    grid: selects,
    body: [h("fieldset", { "data-pointer": `${ptr}/payload` },
      h("legend", {}, action.title), action.description ? h("p", { class: "help" }, action.description) : null,
      h("p", { class: "help" }, "Use {{ trigger.field }} or {{ steps.<id>.output.field }} to pass data along."),
      form.element, h("p", { class: "field-error", hidden: true }))],
  };
}

/** The header of one path of a branch or parallel: its name, condition or "required", remove. */
export function pathHeader(ed, step, i, ptr) {
  const path = step.paths[i];
  const pp = `${ptr}/paths/${i}`;
  const remove = h("button", {
    type: "button", class: "danger small", "aria-label": `Remove path ${path.name || i + 1} of ${step.id}`,
    disabled: step.paths.length <= 1,
    on: { click: () => { step.paths.splice(i, 1); ed.changed(); ed.rerender(ptr); } },
  }, "Remove path");
  return h("div", { class: "path-head" },
    textField(ed, `${pp}/name`, "Path name", path.name, setKey(path, "name"), { placeholder: `path ${i + 1}` }),
    step.type === "branch"
      ? conditionField(ed, `${pp}/if`, "Runs when", path.if, setKey(path, "if"), "the first path whose condition holds runs")
      : checkField(ed, `${pp}/required`, "its failure fails the step", path.required !== false, (v) => { if (v) delete path.required; else path.required = false; }),
    remove);
}

export function addPathButton(ed, step, ptr) {
  return h("button", {
    type: "button", class: "secondary small add-path", "aria-label": `Add a path to ${step.id}`,
    on: {
      click: () => {
        const n = step.paths.length + 1;
        step.paths.push(step.type === "branch" ? { name: `path ${n}`, if: "", steps: [] } : { name: `path ${n}`, steps: [] });
        ed.changed();
        ed.rerender(ptr);
      },
    },
  }, "Add a path");
}

function waitFields(ed, step, ptr) {
  const mode = step.approval ? "approval" : step.until !== undefined ? "until" : "seconds";
  const setMode = (m) => {
    delete step.seconds; delete step.until; delete step.approval;
    if (m === "seconds") step.seconds = 60;
    else if (m === "until") step.until = "";
    else step.approval = { message: "Approve this run?", timeout: 86400, on_timeout: "reject" };
  };
  const out = [selectField(ed, `${ptr}/type`, "Wait for", mode,
    [["seconds", "a duration"], ["until", "a time"], ["approval", "someone to approve or reject"]], setMode, { rerender: true })];
  if (mode === "seconds") {
    out.push(countField(ed, `${ptr}/seconds`, "Seconds", step.seconds, setKey(step, "seconds"), { help: "up to 5 s sleeps in place; longer suspends the run (no worker waits)" }));
  } else if (mode === "until") {
    out.push(textField(ed, `${ptr}/until`, "Until", step.until, (v) => { step.until = v; }, { template: true, placeholder: "2026-12-24T09:00:00Z or {{ trigger.when }}", help: "an ISO 8601 time or a template" }));
  } else {
    const a = step.approval;
    out.push(textField(ed, `${ptr}/approval/message`, "Message to the approver", a.message, setKey(a, "message"), { template: true, long: true }),
      countField(ed, `${ptr}/approval/timeout`, "Timeout (seconds)", a.timeout, setKey(a, "timeout"), { placeholder: "86400" }),
      selectField(ed, `${ptr}/approval/on_timeout`, "When it times out", a.on_timeout || "reject",
        [["reject", "reject (the step fails)"], ["approve", "approve"]], setKey(a, "on_timeout")));
  }
  return out;
}

/** The fields of a construct's own settings (its nested steps are drawn by the editor). */
export function constructFields(ed, step, ptr) {
  switch (step.type) {
    case "parallel":
      return [countField(ed, `${ptr}/concurrency`, "Paths at once", step.concurrency, setKey(step, "concurrency"), { min: 1, placeholder: "all" })];
    case "for_each":
      return [
        textField(ed, `${ptr}/items`, "Items", step.items, (v) => { step.items = v; }, { template: true, req: true, placeholder: "{{ trigger.orders }}", help: "a template giving a list; the steps inside see {{ item }} and {{ index }}" }),
        countField(ed, `${ptr}/concurrency`, "Items at once", step.concurrency, setKey(step, "concurrency"), { min: 1, placeholder: "1" }),
        countField(ed, `${ptr}/max_items`, "At most items", step.max_items, setKey(step, "max_items"), { min: 1, placeholder: "10000" }),
        selectField(ed, `${ptr}/on_item_error`, "When an item fails", step.on_item_error || "stop",
          [["stop", "stop the loop (the step fails)"], ["collect", "collect the error, go on"]], setKey(step, "on_item_error")),
      ];
    case "wait":
      return waitFields(ed, step, ptr);
    case "pipeline": {
      const opts = ed.pipelines.filter((p) => p.id !== ed.selfId).map((p) => [p.id, `${p.name} (${p.id})`]);
      if (step.pipeline && !opts.some(([id]) => id === step.pipeline)) opts.unshift([step.pipeline, `${step.pipeline} (not found)`]);
      opts.unshift(["", "choose…"]);
      return [
        selectField(ed, `${ptr}/pipeline`, "Pipeline", step.pipeline || "", opts, (v) => { step.pipeline = v; }, { help: "one of your pipelines; this run waits for its run" }),
        jsonField(ed, `${ptr}/input`, "Input (JSON, templates allowed)", step.input, setKey(step, "input"), { placeholder: '{"order": "{{ trigger.id }}"}', help: "the child run's trigger data" }),
      ];
    }
    case "stop":
      return [
        selectField(ed, `${ptr}/status`, "End the run as", step.status || "succeeded", [["succeeded", "succeeded"], ["failed", "failed"]], (v) => { step.status = v; }),
        textField(ed, `${ptr}/message`, "Message", step.message, setKey(step, "message"), { template: true }),
        jsonField(ed, `${ptr}/output`, "Output (JSON, templates allowed)", step.output, setKey(step, "output"), { object: false, placeholder: '{"done": true}' }),
      ];
    case "agent":
      return agentFields(ed, step, ptr);
    default:
      return [];
  }
}
