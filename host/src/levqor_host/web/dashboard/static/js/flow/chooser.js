// The "add a step" chooser: a modal dialog offering the flow constructs (the agent when a
// connector drives one) and every action of the installed connectors (searchable; hidden ones,
// such as an agent's turn, are not offered). Resolves to {kind} or {kind: "action", connector, action},
// or null when closed.

import { h, clear, nextId } from "../ui.js";
import { KINDS } from "./model.js";

let dialog = null;

function matches(q, ...texts) {
  if (!q) return true;
  const hay = texts.filter(Boolean).join(" ").toLowerCase();
  return q.toLowerCase().split(/\s+/).filter(Boolean).every((w) => hay.includes(w));
}

function actionList(catalog, q, pick) {
  const groups = [];
  for (const c of Object.values(catalog)) {
    const actions = Object.entries(c.actions || {}).filter(([n, a]) => !a.hidden && matches(q, c.name, c.title, n, a.title, a.description));
    if (!actions.length) continue;
    groups.push(h("li", { class: "chooser-connector", "data-connector": c.name },
      h("h4", {}, c.title),
      h("ul", { class: "chooser-actions" }, actions.map(([n, a]) => h("li", {},
        h("button", {
          type: "button", class: "secondary chooser-action", "data-connector": c.name, "data-action": n,
          title: a.description || "", on: { click: () => pick({ kind: "action", connector: c.name, action: n }) },
        }, a.title || n))))));
  }
  return groups.length ? groups : [h("li", { class: "muted" }, "No action matches.")];
}

/** Open the chooser; `where` says where the step goes ("after send", "in path big"). */
export function chooseStep(catalog, where) {
  if (dialog) dialog.remove();
  const titleId = nextId("chooser-title");
  const searchId = nextId("chooser-search");
  dialog = h("dialog", { class: "chooser", "aria-labelledby": titleId });
  const agents = Object.values(catalog).filter((c) => c.agent); // connectors that drive agents
  document.body.append(dialog);
  return new Promise((resolve) => {
    let answer = null;
    const pick = (v) => { answer = v; dialog.close(); };
    dialog.addEventListener("close", () => { resolve(answer); dialog.remove(); dialog = null; });
    const list = h("ul", { class: "chooser-list", "aria-live": "polite" });
    const search = h("input", { id: searchId, type: "search", placeholder: "slack, sheets, transform…", autocomplete: "off" });
    const fill = () => clear(list, actionList(catalog, search.value.trim(), pick));
    search.addEventListener("input", fill);
    fill();
    dialog.append(
      h("header", {}, h("h2", { id: titleId }, "Add a step", where ? h("span", { class: "muted small" }, ` ${where}`) : null),
        h("button", { type: "button", class: "secondary small", on: { click: () => dialog.close() } }, "Close")),
      h("h3", { class: "small-title" }, "Flow"),
      h("ul", { class: "chooser-kinds" }, KINDS.filter((k) => k.kind !== "action" && (k.kind !== "agent" || agents.length)).map((k) => h("li", {},
        h("button", { type: "button", class: "secondary", "data-kind": k.kind, "aria-describedby": `${titleId}-${k.kind}`, on: { click: () => pick({ kind: k.kind, connector: k.kind === "agent" ? agents[0].name : undefined }) } }, k.label),
        h("small", { class: "help", id: `${titleId}-${k.kind}` }, k.help)))),
      h("h3", { class: "small-title" }, "Action"),
      h("div", { class: "field" }, h("label", { for: searchId }, "Search actions"), search),
      list);
    dialog.showModal();
    search.focus();
  });
}
