// The pipeline document as a tree of steps (the flow-control document, "levqor": 1): what kind
// each step is, where its nested step lists are, their JSON pointers, new steps of each kind, and
// the text form of conditions. No DOM here.

export const STEP_ID = /^[a-z][a-z0-9_]{0,39}$/;

/** The kinds a builder can add, in the order of the "add" menu. */
export const KINDS = [
  { kind: "action", label: "Action", help: "call a connector's action" },
  { kind: "branch", label: "Branch", help: "the first path whose condition holds runs" },
  { kind: "parallel", label: "Parallel", help: "every path runs, side by side" },
  { kind: "for_each", label: "For each", help: "run steps once per item of a list" },
  { kind: "wait", label: "Wait", help: "pause for a duration or until a time" },
  { kind: "approval", label: "Approval", help: "pause until someone approves or rejects" },
  { kind: "pipeline", label: "Sub-pipeline", help: "run another pipeline and use its output" },
  { kind: "agent", label: "Agent", help: "a model works toward a goal with the actions you give it as tools" },
  { kind: "stop", label: "Stop", help: "end the run here with a status" },
];

export const KIND_LABEL = Object.fromEntries(KINDS.map((k) => [k.kind, k.label]));

export function kindOf(step) {
  if (!step || typeof step !== "object") return "action";
  if (!step.type) return "action";
  if (step.type === "wait" && step.approval) return "approval";
  return step.type;
}

export const escapePointer = (s) => String(s).replace(/~/g, "~0").replace(/\//g, "~1");

/**
 * The step lists nested in a step, each {key, title, steps, pointer, path}:
 * branch and parallel paths (and a branch's default), a loop's body, the error path.
 * `path` is the index of the path in `step.paths` (or undefined).
 */
export function childLists(step, pointer) {
  const out = [];
  const t = step.type;
  if (t === "branch" || t === "parallel") {
    (step.paths || []).forEach((p, i) => {
      if (!Array.isArray(p.steps)) p.steps = [];
      out.push({ key: `paths/${i}`, title: p.name || `path ${i + 1}`, steps: p.steps, pointer: `${pointer}/paths/${i}/steps`, path: i });
    });
    if (t === "branch") {
      if (!Array.isArray(step.default)) step.default = [];
      out.push({ key: "default", title: "otherwise", steps: step.default, pointer: `${pointer}/default` });
    }
  } else if (t === "for_each") {
    if (!Array.isArray(step.steps)) step.steps = [];
    out.push({ key: "steps", title: "for each item", steps: step.steps, pointer: `${pointer}/steps` });
  } else if (t === "wait" && Array.isArray(step.notify)) {
    // an approval's notify steps, when the document has some (kept and edited as they are)
    out.push({ key: "notify", title: "when it starts waiting ({{ approval.approve_url }} in scope)", steps: step.notify, pointer: `${pointer}/notify` });
  }
  if (Array.isArray(step.on_error)) {
    out.push({ key: "on_error", title: "on error", steps: step.on_error, pointer: `${pointer}/on_error` });
  }
  return out;
}

/** Every step of a list and the lists inside it, depth first: fn(step, pointer, list, index). */
export function walk(steps, pointer, fn) {
  (steps || []).forEach((s, i) => {
    const ptr = `${pointer}/${i}`;
    fn(s, ptr, steps, i);
    if (s && typeof s === "object") for (const c of childLists(s, ptr)) walk(c.steps, c.pointer, fn);
  });
}

/** Every step of the document (the pipeline's failure steps too): fn(step, pointer, list, index). */
export function walkDoc(doc, fn) {
  walk(doc.steps, "/steps", fn);
  if (Array.isArray(doc.on_failure)) walk(doc.on_failure, "/on_failure", fn);
}

export function allIds(doc) {
  const ids = [];
  walkDoc(doc, (s) => ids.push(s.id));
  return ids;
}

/** A step id not yet taken anywhere in the document, made from `base`. */
export function uniqueId(doc, base) {
  const taken = new Set(allIds(doc));
  let id = (base || "step").toLowerCase().replace(/[^a-z0-9_]/g, "_").replace(/^[^a-z]+/, "") || "step";
  id = id.slice(0, 36);
  if (!taken.has(id)) return id;
  for (let i = 2; ; i += 1) if (!taken.has(`${id}_${i}`)) return `${id}_${i}`;
}

/** A new step of `kind` ("action" needs `connector` and `action`). */
export function newStep(doc, kind, { connector, action } = {}) {
  switch (kind) {
    case "action":
      return { id: uniqueId(doc, action === "post_message" ? connector : action || connector), connector, action, payload: {} };
    case "branch":
      return { id: uniqueId(doc, "route"), type: "branch", paths: [{ name: "path 1", if: "", steps: [] }] };
    case "parallel":
      return { id: uniqueId(doc, "fan"), type: "parallel", paths: [{ name: "a", steps: [] }, { name: "b", steps: [] }] };
    case "for_each":
      return { id: uniqueId(doc, "each"), type: "for_each", items: "{{ trigger.items }}", steps: [] };
    case "wait":
      return { id: uniqueId(doc, "pause"), type: "wait", seconds: 60 };
    case "approval":
      return { id: uniqueId(doc, "approval"), type: "wait", approval: { message: "Approve this run?", timeout: 86400, on_timeout: "reject" } };
    case "pipeline":
      return { id: uniqueId(doc, "child"), type: "pipeline", pipeline: "", input: {} };
    case "stop":
      return { id: uniqueId(doc, "done"), type: "stop", status: "succeeded" };
    case "agent":
      return { id: uniqueId(doc, "agent"), type: "agent", connector, tools: [] };
    default:
      throw new Error(`unknown kind of step: ${kind}`);
  }
}

/** The document as saved: no empty optional step list (a branch's default, the failure steps). */
export function cleanDoc(doc) {
  walkDoc(doc, (s) => {
    if (s.type === "branch" && Array.isArray(s.default) && !s.default.length) delete s.default;
    if (s.type === "wait" && Array.isArray(s.notify) && !s.notify.length) delete s.notify;
  });
  if (Array.isArray(doc.on_failure) && !doc.on_failure.length) delete doc.on_failure;
  return doc;
}

/** A condition as the text of its field: a template as is, anything else as JSON. */
export function conditionText(v) {
  if (v === undefined || v === null) return "";
  return typeof v === "string" ? v : JSON.stringify(v);
}

/**
 * The text of a condition field as a condition: "" -> undefined (none), true/false, a JSON
 * object ({"left":..., "op":..., "right":...}, {"all": [...]}) when it parses, else the text
 * (a template such as "{{ trigger.total > 100 }}"). {ok: false} when it looks like JSON but is not.
 */
export function parseCondition(text) {
  const raw = text.trim();
  if (raw === "") return { ok: true, value: undefined };
  if (raw === "true" || raw === "false") return { ok: true, value: raw === "true" };
  if (raw.startsWith("{") && !raw.startsWith("{{")) {
    try {
      const v = JSON.parse(raw);
      if (v && typeof v === "object" && !Array.isArray(v)) return { ok: true, value: v };
    } catch { /* below */ }
    return { ok: false, message: "a condition object must be valid JSON" };
  }
  return { ok: true, value: text };
}

/** An optional whole number from a field's text: "" -> undefined; NaN when it is not one. */
export function parseCount(text) {
  const raw = text.trim();
  if (raw === "") return undefined;
  return /^\d+$/.test(raw) ? Number(raw) : NaN;
}

/** The problems the builder can see before the API does: ids (pattern, unique anywhere). */
export function idProblems(doc) {
  const out = [];
  const seen = new Map();
  walkDoc(doc, (s, ptr) => {
    if (!STEP_ID.test(s.id || "")) {
      out.push({ pointer: `${ptr}/id`, message: "a step id starts with a letter and has only a-z, 0-9 and _ (at most 40)" });
    } else if (seen.has(s.id)) {
      out.push({ pointer: `${ptr}/id`, message: `step id '${s.id}' is taken by ${seen.get(s.id)}: ids are unique in the whole pipeline` });
    } else {
      seen.set(s.id, ptr);
    }
  });
  return out;
}
