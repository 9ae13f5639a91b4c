// The agent step's form: the model connector, its credential and model (the server's list),
// instructions and goal (templates), the tools (connector actions of the catalog, each with its
// credential, the payload fields the author fixes and whether a call waits for approval), which
// calls wait for approval, and the limits (turns, tokens, seconds).

import { objectForm } from "../schemaform.js";
import { h, nextId } from "../ui.js";
import { countField, field, selectField, textField } from "./fields.js";
import { credentialField, stepConnectors, visibleActions } from "./kinds.js";
import { attachOptions, loadOptions } from "./options.js";

const setKey = (obj, key) => (v) => { if (v === undefined || v === "") delete obj[key]; else obj[key] = v; };

/** The connectors that drive agent steps. */
export const agentConnectors = (catalog) => Object.values(catalog).filter((c) => c.agent);

/** The action whose `model` field lists the server's models: the turn action, else another. */
function modelAction(connector) {
  const actions = connector.actions || {};
  const turn = connector.agent && connector.agent.action;
  if (turn && (actions[turn]?.options || []).includes("model")) return turn;
  const other = Object.entries(actions).find(([, a]) => (a.options || []).includes("model"));
  return other ? other[0] : null;
}

/** A number field ("" leaves it out). */
function numberField(ed, ptr, label, value, set, { help, placeholder } = {}) {
  const control = h("input", { id: nextId("num"), type: "text", inputmode: "decimal", placeholder, autocomplete: "off" });
  control.value = value === undefined || value === null ? "" : String(value);
  const f = field(ptr, label, control, help);
  const err = f.querySelector(":scope > .field-error");
  control.addEventListener("input", () => {
    const raw = control.value.trim();
    const n = raw === "" ? undefined : Number(raw);
    if (raw !== "" && (!/^\d+(\.\d+)?$/.test(raw) || Number.isNaN(n))) {
      ed.bad.set(ptr, "a number");
      control.setAttribute("aria-invalid", "true");
      err.textContent = "a number"; err.hidden = false;
    } else {
      ed.bad.delete(ptr);
      control.removeAttribute("aria-invalid");
      err.hidden = true;
      set(n);
    }
    ed.changed();
  });
  return f;
}

const APPROVAL = [["", "as the agent says"], ["ask", "always ask first"], ["never", "never ask"]];

/** One tool of the agent: connector and action, credential, fixed fields, approval, remove. */
function toolRow(ed, step, j, ptr) {
  const tool = step.tools[j];
  const tp = `${ptr}/tools/${j}`;
  const connector = ed.catalog[tool.connector];
  const action = connector ? (connector.actions || {})[tool.action] : null;
  const label = `tool ${j + 1}`;
  const cs = h("select", { id: nextId("tcon"), required: true, "aria-label": `Connector of ${label}` });
  if (!connector) cs.append(h("option", { value: tool.connector }, `${tool.connector} (not installed)`));
  for (const c of stepConnectors(ed.catalog)) cs.append(h("option", { value: c.name }, c.title));
  cs.value = tool.connector;
  cs.addEventListener("change", () => {
    const c = ed.catalog[cs.value];
    step.tools[j] = { connector: cs.value, action: c ? (visibleActions(c)[0] || [""])[0] : "" };
    ed.changed();
    ed.rerender(`${tp}/connector`);
  });
  const as = h("select", { id: nextId("tact"), required: true, "aria-label": `Action of ${label}` });
  for (const [n, a] of visibleActions(connector)) as.append(h("option", { value: n }, a.title || n));
  if (!action || action.hidden) as.append(h("option", { value: tool.action }, `${tool.action} (unknown)`));
  as.value = tool.action;
  as.addEventListener("change", () => {
    tool.action = as.value;
    delete tool.payload;
    ed.changed();
    ed.rerender(`${tp}/action`);
  });
  const approval = tool.approval === true ? "ask" : tool.approval === false ? "never" : "";
  const grid = [
    field(`${tp}/connector`, "Connector", cs),
    field(`${tp}/action`, "Action", as),
    connector && connector.credentials ? credentialField(ed, tool, tp, connector) : null,
    selectField(ed, `${tp}/approval`, "Approval before a call", approval, APPROVAL, (v) => {
      if (v === "ask") tool.approval = true; else if (v === "never") tool.approval = false; else delete tool.approval;
    }),
  ];
  let fixed = null;
  if (action && !action.hidden) {
    // every field is the model's to set, except those the author fills in here
    const schema = { ...action.payload, required: [] };
    const form = objectForm(schema, tool.payload || {}, `${tp}/payload`, {
      idPrefix: nextId("tp"),
      onChange: (v) => { if (Object.keys(v).length) tool.payload = v; else delete tool.payload; ed.changed(); },
    });
    ed.forms.set(`${tp}/payload`, form);
    if (ed.picker) {
      for (const el of form.element.querySelectorAll("input[type=text], textarea")) {
        const fe = el.closest(".field");
        if (fe) ed.picker(el, fe.dataset.pointer, fe);
      }
    }
    fixed = h("details", { class: "tool-fixed", open: !!(tool.payload && Object.keys(tool.payload).length) },
      h("summary", {}, "Fixed fields (optional)"),
      h("p", { class: "help" }, "Fields you fill in here are fixed: the model neither sees nor sets them. It sets the others."),
      form.element);
  }
  const naming = h("details", { class: "tool-naming", open: !!(tool.name || tool.description) },
    h("summary", {}, "Name and description for the model (optional)"),
    h("div", { class: "grid2" },
      textField(ed, `${tp}/name`, "Tool name", tool.name, setKey(tool, "name"), { placeholder: `${tool.connector}_${tool.action}`, help: "a-z A-Z 0-9 _ -; two tools of one action need different names" }),
      textField(ed, `${tp}/description`, "Description", tool.description, setKey(tool, "description"), { long: true, placeholder: action ? `${action.title}. ${action.description || ""}` : "" })));
  const writes = action && action.writes !== false;
  return h("li", { class: "agent-tool field", "data-pointer": tp, "data-tool": `${tool.connector}.${tool.action}` },
    h("div", { class: "tool-head" },
      h("h5", {}, `Tool ${j + 1}: `, h("span", { class: "mono" }, tool.name || `${tool.connector}_${tool.action}`),
        action ? h("span", { class: `muted small` }, writes ? " (writes upstream)" : " (reads)") : null),
      h("button", {
        type: "button", class: "danger small", "aria-label": `Remove ${label} of ${step.id}`,
        on: { click: () => { step.tools.splice(j, 1); ed.changed(); ed.rerender(`${ptr}/tools`); } },
      }, "Remove tool")),
    h("div", { class: "grid2" }, grid),
    naming,
    fixed,
    h("p", { class: "field-error", hidden: true }));
}

/** The agent step's own fields (editor.card puts them in the card's construct grid). */
export function agentFields(ed, step, ptr) {
  if (!Array.isArray(step.tools)) step.tools = [];
  const agents = agentConnectors(ed.catalog);
  const connector = ed.catalog[step.connector];
  const opts = agents.map((c) => [c.name, c.title]);
  if (!connector || !connector.agent) opts.unshift([step.connector || "", `${step.connector || "choose"} (cannot drive an agent)`]);
  const out = [
    selectField(ed, `${ptr}/connector`, "Model connector", step.connector || "", opts, (v) => {
      step.connector = v; delete step.credential; delete step.model;
    }, { rerender: true }),
  ];
  if (connector && connector.credentials) {
    out.push(credentialField(ed, step, ptr, connector, { onChange: () => ed.rerender(`${ptr}/credential`) }));
  }
  const model = textField(ed, `${ptr}/model`, "Model", step.model, setKey(step, "model"), { req: true, placeholder: "gpt-4o-mini" });
  const source = connector && connector.agent ? modelAction(connector) : null;
  if (source) attachOptions(model, () => loadOptions(connector.name, source, "model", step.credential, {}), { what: "the models" });
  out.push(model,
    textField(ed, `${ptr}/system`, "Instructions (optional)", step.system, setKey(step, "system"), { template: true, long: true, placeholder: "You help the support team. Be brief." }),
    textField(ed, `${ptr}/goal`, "Goal", step.goal, setKey(step, "goal"), { template: true, long: true, req: true, placeholder: "Find the order of {{ trigger.email }} and tell the customer where it is." }),
    selectField(ed, `${ptr}/approval`, "Ask for approval before", step.approval || "writes",
      [["writes", "calls of actions that write upstream"], ["all", "every call"], ["none", "no call"]],
      (v) => { if (v === "writes") delete step.approval; else step.approval = v; }),
    countField(ed, `${ptr}/approval_timeout`, "Approval timeout (seconds)", step.approval_timeout, setKey(step, "approval_timeout"), { min: 1, placeholder: "none", help: "undecided by then: rejected" }),
    countField(ed, `${ptr}/max_iterations`, "At most turns", step.max_iterations, setKey(step, "max_iterations"), { min: 1, placeholder: "10" }),
    countField(ed, `${ptr}/max_tokens`, "At most tokens", step.max_tokens, setKey(step, "max_tokens"), { min: 1, placeholder: "100000" }),
    numberField(ed, `${ptr}/timeout`, "Timeout (seconds)", step.timeout, setKey(step, "timeout"), { placeholder: "300", help: "time spent waiting for approvals not counted" }),
    numberField(ed, `${ptr}/temperature`, "Temperature (optional)", step.temperature, setKey(step, "temperature"), { placeholder: "0 to 2" }));
  const add = h("button", {
    type: "button", class: "secondary small add-tool", "aria-label": `Add a tool to ${step.id}`,
    on: {
      click: () => {
        const first = stepConnectors(ed.catalog).find((c) => !c.agent) || stepConnectors(ed.catalog)[0];
        step.tools.push({ connector: first.name, action: visibleActions(first)[0][0] });
        ed.changed();
        ed.rerender(`${ptr}/tools/${step.tools.length - 1}/connector`);
      },
    },
  }, "Add a tool");
  const tools = h("section", { class: "agent-tools field", "data-pointer": `${ptr}/tools` },
    h("h4", {}, `Tools (${step.tools.length})`),
    h("p", { class: "help" }, "Actions the model may call, each with the credential you choose (the model never sees it)."),
    h("ol", { class: "tool-list" }, step.tools.map((_, j) => toolRow(ed, step, j, ptr))),
    step.tools.length ? null : h("p", { class: "muted small" }, "No tool yet: the model can only answer."),
    add,
    h("p", { class: "field-error", hidden: true }));
  out.push(tools);
  return out;
}
