// "Test this step" on each card of the builder: POST /api/v1/pipelines/<id>/steps/<step>/test runs
// the step (or the construct with its steps) of the saved pipeline alone, with the trigger data
// and outputs of a past run, the pinned outputs, or trigger data typed here; nothing is recorded.
// A step whose actions write upstream (the catalog's `writes`) says so before it is tested.

import { get, post, put, qs, ApiError } from "../api.js";
import { h, clear, nextId, badge, jsonPre, busy, errorText, fmtTime, toast } from "../ui.js";
import { errorBlock } from "./runtree.js";
import { walk } from "./model.js";

/** The connector.action of the step's actions (nested too) that write upstream. */
export function writesOf(catalog, step) {
  const out = new Set();
  walk([step], "", (s) => {
    if (s.type && s.type !== "action") return;
    const c = catalog[s.connector];
    const a = c && c.actions ? c.actions[s.action] : null;
    if (a && a.writes) out.add(`${s.connector}.${s.action}`);
  });
  return [...out].sort();
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** "Pin this output": a new version of the pipeline with it as the step's sample data. */
function pinButton(ctx, id, output) {
  const b = h("button", { type: "button", class: "secondary small pin-output" }, "Pin this output as sample data");
  b.addEventListener("click", async () => {
    busy(b, true, "Pinning…");
    try {
      const saved = await put(`/api/v1/pipelines/${encodeURIComponent(ctx.pipelineId())}/pinned/${encodeURIComponent(id)}`, { output });
      ctx.onPinned(saved);
      toast(`Pinned as sample data of ${id} (version ${saved.version}); real runs never use it`, "ok");
      b.textContent = "Pinned";
    } catch (e) {
      toast(errorText(e), "bad", 8000);
      busy(b, false);
    }
  });
  return b;
}

function resultView(out, pin) {
  return h("div", { class: "test-result", "data-status": out.status },
    out.status === "succeeded" && isObject(out.output) && pin ? pin(out.output) : null,
    h("p", {}, "Result: ", badge(out.status)),
    out.warning ? h("p", { class: "notice warn test-warning" }, out.warning) : null,
    out.input !== undefined && out.input !== null ? h("div", {}, h("h5", {}, "Input (rendered)"), jsonPre(out.input, "test-input")) : null,
    out.error ? errorBlock(out.error)
      : out.status === "waiting" && out.wait ? h("div", {}, h("h5", {}, "Would wait for"), jsonPre(out.wait))
        : h("div", {}, h("h5", {}, "Output"), jsonPre(out.output ?? null, "test-output")));
}

/**
 * The editor's `cardTools` hook. ctx: {catalog, pipelineId() (null until saved), dirty(),
 * onPinned(pipeline) (a test's output was pinned: the pipeline's new version)}.
 */
export function stepTester(ctx) {
  let runs = null; // the pipeline's recent runs (loaded once)
  const recentRuns = async (pid) => {
    if (!runs) runs = get(`/api/v1/runs${qs({ pipeline_id: pid, limit: 10 })}`).then((r) => r.items).catch(() => []);
    return runs;
  };
  const tools = (step, ptr) => {
    const id = step.id;
    const panelId = nextId("test");
    const source = h("select", { id: `${panelId}-from` });
    const trigger = h("textarea", { id: `${panelId}-trigger`, class: "mono", rows: "2", spellcheck: "false", placeholder: '{"name": "Ada"}' });
    const note = h("p", { class: "notice warn", hidden: true });
    const result = h("div", { "aria-live": "polite" });
    const run = h("button", { type: "button", class: "run-test" }, "Run the test");
    let armed = false;
    const panel = h("section", { class: "step-test", id: panelId, hidden: true, "aria-label": `Test ${id}` },
      h("h4", {}, "Test this step alone"),
      h("p", { class: "help" }, "Runs the saved version of this step with the data chosen here; nothing is recorded as a run."),
      h("div", { class: "grid2" },
        h("div", { class: "field" }, h("label", { for: source.id }, "Data from"), source),
        h("div", { class: "field" }, h("label", { for: trigger.id }, "Test with trigger data (JSON, optional)"), trigger)),
      note, h("div", { class: "actions" }, run), result);
    const open = async () => {
      panel.hidden = !panel.hidden;
      if (panel.hidden) return;
      const pid = ctx.pipelineId();
      if (!pid) {
        clear(result, h("p", { class: "notice" }, "Save the pipeline first: a test runs its saved version."));
        run.disabled = true;
        return;
      }
      run.disabled = false;
      if (ctx.dirty()) clear(result, h("p", { class: "notice" }, "There are unsaved changes: the test runs the saved version."));
      const items = await recentRuns(pid);
      clear(source, h("option", { value: "" }, "no run: the trigger data below"),
        h("option", { value: "pinned" }, "the pinned sample outputs"),
        items.map((r) => h("option", { value: r.id }, `run ${r.id.slice(0, 12)}… ${r.status}, ${fmtTime(r.created_at)}`)));
      if (items.length) source.value = items[0].id;
    };
    run.addEventListener("click", async () => {
      const writes = writesOf(ctx.catalog, step);
      if (writes.length && !armed) {
        armed = true;
        note.textContent = `This step writes upstream (${writes.join(", ")}): testing it really sends or changes something there. Click "Test for real" to go on.`;
        note.hidden = false;
        run.textContent = "Test for real";
        return;
      }
      const body = {};
      if (source.value === "pinned") body.use_pinned = true;
      else if (source.value) body.run_id = source.value;
      if (trigger.value.trim()) {
        try { body.trigger = JSON.parse(trigger.value); } catch (e) {
          clear(result, h("p", { class: "form-error" }, `Trigger data is not valid JSON: ${e.message}`));
          trigger.focus();
          return;
        }
      }
      busy(run, true, "Testing…");
      try {
        const out = await post(`/api/v1/pipelines/${encodeURIComponent(ctx.pipelineId())}/steps/${encodeURIComponent(id)}/test`, body);
        clear(result, resultView(out, ctx.onPinned ? (output) => pinButton(ctx, id, output) : null));
      } catch (e) {
        const problems = e instanceof ApiError ? e.problems : [];
        clear(result, h("p", { class: "form-error" }, errorText(e)),
          problems.length ? h("ul", { class: "small" }, problems.map((p) => h("li", {}, h("code", {}, p.pointer || "/"), " ", p.message))) : null);
      } finally {
        busy(run, false);
        armed = false;
        note.hidden = true;
        run.textContent = "Run the test";
      }
    });
    const button = h("button", {
      type: "button", class: "secondary small test-step", "aria-controls": panelId, "aria-label": `Test this step ${id}`, "data-label": "Test this step {id}",
      on: { click: open },
    }, "Test");
    return { header: [button], body: [panel] };
  };
  return tools;
}
