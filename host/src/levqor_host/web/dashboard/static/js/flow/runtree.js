// A run's steps as the API gives them (GET /api/v1/runs/<id>): a tree in document order. A
// construct's records sit under it by scope (a branch's or a parallel's path, the error path), a
// loop's items are paged (counts by status, the first page, "more" from the items endpoint).
// Every record is a card `li.run-step[data-step=<path>]`, its path such as `each[17].send`.
// An agent's records (its model turns `helper.turns[0]`, their tool calls
// `helper.turns[0].calls[1]` and a call's approval `...calls[1].approval`) are its trace: each
// turn with its model and tokens, each call with its tool, input, output or error, timing and
// attempts, a waiting approval with buttons to decide it.

import { get, qs } from "../api.js";
import { h, badge, fmtTime, fmtDuration, jsonPre, toast, errorText } from "../ui.js";
import { KIND_LABEL, walkDoc } from "./model.js";

/** "812 in + 64 out = 876 tokens" of a step's or a run's usage (null without). */
export function tokensText(u) {
  if (!u || typeof u !== "object") return null;
  const n = (v) => Number(v || 0).toLocaleString("en");
  return `${n(u.input_tokens)} in + ${n(u.output_tokens)} out = ${n(u.total_tokens ?? (u.input_tokens || 0) + (u.output_tokens || 0))} tokens`;
}

const TURN = /\.turns\[(\d+)\]$/;
const CALL = /\.calls\[(\d+)\]$/;

export function errorBlock(err) {
  if (!err) return null;
  const msg = typeof err === "object" && err.message ? err.message : null;
  return h("div", { class: "step-error" },
    msg ? h("p", { class: "form-error" }, msg) : null,
    h("details", { open: !msg }, h("summary", {}, "Error details"), jsonPre(err, "error")));
}

/** The document's step of a record path (`each[3].route.paths[1].notify` -> the step `notify`). */
function lastId(path) {
  const segs = String(path).split(".");
  return segs[segs.length - 1].replace(/\[\d+\]$/, "");
}

export class RunTree {
  /** runId; doc: the run's pipeline version (for path names), or null. */
  constructor(runId, doc) {
    this.runId = runId;
    this.defs = new Map();
    if (doc) walkDoc(doc, (s) => this.defs.set(s.id, s));
    this.more = new Map(); // loop path -> {items: [...], next, by_status, total} loaded beyond the first page
  }

  scopeTitle(parentPath, scope) {
    const def = this.defs.get(lastId(parentPath));
    const m = /^paths\[(\d+)\]$/.exec(scope || "");
    if (m) {
      const p = def && def.paths ? def.paths[Number(m[1])] : null;
      return `Path ${Number(m[1]) + 1}${p && p.name ? `: ${p.name}` : ""}`;
    }
    if (scope === "default") return "Otherwise (no path matched)";
    if (scope === "on_error") return "Error path";
    if (scope === "on_failure") return "When the run failed";
    return scope || "";
  }

  /**
   * An agent's records under their agent, turn or call: a call's approval is recorded before the
   * call itself, so until the call runs the approval sits under the nearest record there is.
   */
  adopt(steps) {
    const byId = new Map();
    const index = (list) => { for (const r of list || []) { byId.set(r.id, r); index(r.children); } };
    index(steps);
    const parentOf = (id) => {
      const up = [];
      let m = /^(.*)\.approval$/.exec(id);
      if (m && CALL.test(m[1])) up.push(m[1]);
      const base = m ? m[1] : id;
      m = /^(.*\.turns\[\d+\])\.calls\[\d+\]$/.exec(base);
      if (m) up.push(m[1]);
      m = /^(.*)\.turns\[\d+\]/.exec(base);
      if (m) up.push(m[1]);
      return up.map((p) => byId.get(p)).find((r) => r && r.id !== id) || null;
    };
    const sweep = (list) => (list || []).filter((r) => {
      if (r.children) r.children = sweep(r.children);
      const parent = /\.(turns\[\d+\]|approval)/.test(r.id) ? parentOf(r.id) : null;
      if (!parent || (parent.children || []).includes(r)) return true;
      parent.children = [...(parent.children || []), r];
      return false;
    });
    return sweep(steps);
  }

  /** The cards of a list of records (top level, a scope, an item). */
  cards(steps) {
    const out = [];
    let scope;
    for (const s of steps || []) {
      if (s.scope === "on_failure" && scope !== "on_failure") out.push(h("li", { class: "scope-title" }, h("h3", {}, this.scopeTitle(null, "on_failure"))));
      scope = s.scope;
      out.push(this.card(s));
    }
    return out;
  }

  /** The cards of an agent's turns, or of a turn's calls, or of a call's approval. */
  trace(s) {
    const kids = s.children || [];
    if (s.connector === "flow" && s.action === "agent") {
      const turns = kids.filter((c) => TURN.test(c.id));
      const rest = kids.filter((c) => !TURN.test(c.id));
      return turns.length || rest.length ? [h("section", { class: "agent-trace", "data-trace": s.id }, h("h4", {}, `Trace: ${turns.length} turn${turns.length === 1 ? "" : "s"}`),
        h("ol", { class: "steps" }, [...turns, ...rest].map((t) => this.card(t))))] : [];
    }
    if (TURN.test(s.id) || CALL.test(s.id)) return kids.length ? [h("ol", { class: "steps agent-calls" }, kids.map((c) => this.card(c)))] : [];
    return null;
  }

  /** Approve and reject buttons of a tool call's waiting approval (run.js decides through onDecide). */
  decision(s) {
    if (s.status !== "waiting" || !s.id.endsWith(".approval")) return null;
    const d = s.input && typeof s.input === "object" ? s.input : {};
    const tool = d.tool || (d.approval && d.approval.tool) || s.id.replace(/\.approval$/, "");
    const btn = (verb, label, cls) => h("button", {
      type: "button", class: cls, "data-decide": verb, "aria-label": `${label} the call of ${tool}`,
      on: { click: (ev) => this.onDecide(verb, ev.currentTarget) },
    }, label);
    return h("div", { class: "actions trace-decision" }, btn("approve", "Approve", ""), btn("reject", "Reject", "danger"));
  }

  nested(s) {
    const traced = this.trace(s);
    if (traced) return traced;
    const groups = new Map();
    for (const c of s.children || []) {
      const key = c.scope || "";
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(c);
    }
    const paths = [...groups.entries()].filter(([k]) => k !== "on_error");
    const out = [];
    if (paths.length) {
      out.push(h("div", { class: "run-paths" }, paths.map(([scope, list]) => h("section", { class: "run-path", "data-scope": scope },
        h("h4", {}, this.scopeTitle(s.id, scope)), h("ol", { class: "steps" }, this.cards(list))))));
    }
    if (groups.has("on_error")) {
      out.push(h("section", { class: "run-path error-path", "data-scope": "on_error" },
        h("h4", {}, this.scopeTitle(s.id, "on_error")), h("ol", { class: "steps" }, this.cards(groups.get("on_error")))));
    }
    if (s.items) out.push(this.loop(s));
    return out;
  }

  card(s) {
    const timing = s.started_at ? `${fmtDuration(s.started_at, s.finished_at)}${s.finished_at ? "" : " so far"}` : "—";
    const flow = s.connector === "flow";
    const turn = TURN.exec(s.id);
    const call = CALL.exec(s.id);
    let what = flow ? KIND_LABEL[s.action] || s.action : `${s.connector}.${s.action}`;
    if (turn) what = `turn ${Number(turn[1]) + 1}: the model${s.usage && s.usage.model ? ` ${s.usage.model}` : ""}`;
    else if (call) what = `tool call: ${s.connector}.${s.action}`;
    else if (s.id.endsWith(".approval") && flow) what = "approval of the call";
    const def = turn || call ? null : this.defs.get(lastId(s.id));
    const usage = s.usage || ((turn || (flow && s.action === "agent")) && s.output ? s.output.usage : null);
    const said = turn && s.output && typeof s.output.content === "string" && s.output.content ? s.output.content : null;
    const answer = flow && s.action === "agent" && s.output && typeof s.output.answer === "string" ? s.output.answer : null;
    return h("li", { class: `run-step ${s.status}${flow ? " construct" : ""}${turn ? " agent-turn" : ""}${call ? " agent-call" : ""}`, "data-step": s.id, "data-status": s.status },
      h("h3", {}, h("span", { class: "mono" }, s.id), badge(s.status),
        h("span", { class: "muted small" }, what), def && def.name ? h("span", { class: "small" }, def.name) : null),
      h("dl", { class: "facts small" },
        flow ? null : [h("dt", {}, "Attempts"), h("dd", { class: "attempts" }, String(s.attempts ?? 0))],
        h("dt", {}, "Started"), h("dd", {}, fmtTime(s.started_at)),
        h("dt", {}, "Took"), h("dd", {}, timing),
        tokensText(usage) ? [h("dt", {}, "Tokens"), h("dd", { class: "usage-tokens", "data-tokens": String(usage.total_tokens ?? "") }, tokensText(usage))] : null),
      answer !== null ? h("blockquote", { class: "agent-answer" }, answer) : null,
      said !== null ? h("blockquote", { class: "turn-content" }, said) : null,
      this.decision(s),
      s.input !== undefined && s.input !== null
        ? h("details", {}, h("summary", {}, s.status === "waiting" ? "Waiting for" : "Input (rendered, secrets redacted)"), jsonPre(s.input)) : null,
      s.error ? errorBlock(s.error)
        : (s.output !== undefined && s.output !== null
          ? h("details", { open: !flow && !turn }, h("summary", {}, "Output (secrets redacted)"), jsonPre(s.output)) : null),
      ...this.nested(s));
  }

  /** A loop's items: counts by status, the loaded pages, "Show more items". */
  loop(s) {
    const first = s.items;
    const extra = this.more.get(s.id);
    const counts = (extra || first).by_status || {};
    const total = (extra || first).total ?? 0;
    const items = [...(first.page || []), ...(extra ? extra.items : [])];
    const next = extra ? extra.next : first.page ? first.next : "";
    const box = h("section", { class: "loop-items", "data-loop": s.id },
      h("h4", {}, `Items: ${total}`, " ",
        h("span", { class: "counts" }, Object.entries(counts).map(([st, n]) => h("span", { class: `badge ${st}`, "data-count": st }, `${n} ${st}`)))),
      h("ol", { class: "items" }, items.map((it) => h("li", { class: `loop-item ${it.status}`, "data-index": String(it.index), "data-status": it.status },
        h("h5", {}, `Item ${it.index}`, " ", badge(it.status)),
        h("ol", { class: "steps" }, this.cards(it.steps))))));
    if (next !== null && next !== undefined) {
      const btn = h("button", { type: "button", class: "secondary small more-items" }, items.length ? `Show more items (${items.length} of ${total} shown)` : "Show the items");
      btn.addEventListener("click", async () => {
        btn.disabled = true;
        try {
          const page = await get(`/api/v1/runs/${encodeURIComponent(this.runId)}/steps/${encodeURIComponent(s.id)}/items${qs({ cursor: next || "", limit: 50 })}`);
          const before = this.more.get(s.id);
          this.more.set(s.id, { items: [...(before ? before.items : []), ...page.items], next: page.next, by_status: page.by_status, total: page.total });
          this.onMore();
        } catch (e) {
          toast(errorText(e), "bad", 8000);
          btn.disabled = false;
        }
      });
      box.append(btn);
    }
    return box;
  }

  onMore() { /* the page redraws */ }

  onDecide() { /* the page decides the run's wait */ }
}
