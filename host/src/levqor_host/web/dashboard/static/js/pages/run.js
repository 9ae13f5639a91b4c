import { get, post, ApiError } from "../api.js";
import { boot, start } from "../common.js";
import { $, h, clear, badge, fmtTime, fmtDuration, jsonPre, poll, toast, busy, errorText, pageIds } from "../ui.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);
let planned = null; // the pipeline version's steps, to show those not reached yet
let pipelineName = null;

function errorBlock(err) {
  if (!err) return null;
  const msg = typeof err === "object" && err.message ? err.message : null;
  return h("div", { class: "step-error" },
    msg ? h("p", { class: "form-error" }, msg) : null,
    h("details", { open: !msg }, h("summary", {}, "Error details"), jsonPre(err, "error")));
}

function stepCard(s) {
  const timing = s.started_at ? `${fmtDuration(s.started_at, s.finished_at)}${s.finished_at ? "" : " so far"}` : "—";
  return h("li", { class: `run-step ${s.status}`, "data-step": s.id, "data-status": s.status },
    h("h3", {}, h("span", { class: "mono" }, s.id), badge(s.status),
      h("span", { class: "muted small" }, `${s.connector}.${s.action}`)),
    h("dl", { class: "facts small" },
      h("dt", {}, "Attempts"), h("dd", { class: "attempts" }, String(s.attempts ?? 0)),
      h("dt", {}, "Started"), h("dd", {}, fmtTime(s.started_at)),
      h("dt", {}, "Took"), h("dd", {}, timing)),
    s.input !== undefined && s.input !== null
      ? h("details", {}, h("summary", {}, "Input (rendered, secrets redacted)"), jsonPre(s.input)) : null,
    s.error ? errorBlock(s.error)
      : (s.output !== undefined && s.output !== null
        ? h("details", { open: true }, h("summary", {}, "Output (secrets redacted)"), jsonPre(s.output)) : null));
}

function pendingCard(step) {
  return h("li", { class: "run-step pending", "data-step": step.id, "data-status": "pending" },
    h("h3", {}, h("span", { class: "mono" }, step.id), badge("pending"),
      h("span", { class: "muted small" }, `${step.connector}.${step.action}`)));
}

function render(run) {
  document.title = `Run ${run.status} · Levqor`;
  $("#run-id").textContent = run.id;
  const st = $("#run-status");
  st.textContent = run.status + (run.cancel_requested && !FINAL.has(run.status) ? " (cancelling)" : "");
  st.className = `badge ${run.status}`;
  st.dataset.runStatus = run.status;
  $("#run-poll").hidden = FINAL.has(run.status);
  const facts = $("#run-facts");
  clear(facts,
    h("dt", {}, "Pipeline"), h("dd", {}, h("a", { href: `/pipelines/${encodeURIComponent(run.pipeline_id)}` }, pipelineName || run.pipeline_id), ` version ${run.version}`),
    h("dt", {}, "Trigger"), h("dd", {}, run.trigger || "—"),
    run.retry_of ? [h("dt", {}, "Retry of"), h("dd", {}, h("a", { href: `/runs/${encodeURIComponent(run.retry_of)}` }, run.retry_of))] : null,
    h("dt", {}, "Queued"), h("dd", {}, fmtTime(run.created_at)),
    h("dt", {}, "Started"), h("dd", {}, fmtTime(run.started_at)),
    h("dt", {}, "Finished"), h("dd", {}, fmtTime(run.finished_at)),
    h("dt", {}, "Took"), h("dd", {}, run.started_at ? fmtDuration(run.started_at, run.finished_at) : "—"),
    h("dt", {}, "Input"), h("dd", {}, h("details", {}, h("summary", {}, "show"), jsonPre(run.input ?? {}))));
  clear($("#run-error"), run.error ? errorBlock(run.error) : null);
  $("#retry").hidden = !(run.status === "failed" || run.status === "cancelled");
  $("#cancel").hidden = FINAL.has(run.status) || run.cancel_requested;
  const seen = new Set((run.steps || []).map((s) => s.id));
  const cards = (run.steps || []).map(stepCard);
  if (planned && !FINAL.has(run.status)) {
    for (const step of planned) if (!seen.has(step.id)) cards.push(pendingCard(step));
  }
  clear($("#steps"), cards.length ? cards : h("li", { class: "muted" }, run.status === "queued" ? "Waiting for a worker…" : "No step ran."));
}

async function main() {
  await boot();
  const { run_id: runId } = pageIds();
  const path = `/api/v1/runs/${encodeURIComponent(runId)}`;
  let current = null;
  let first = true;
  const load = async () => {
    try {
      current = await get(path);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        $("#run-status").textContent = "not found";
        clear($("#steps"), h("li", { class: "notice bad" }, "This run does not exist, or is not yours."));
        return false;
      }
      throw e;
    }
    if (first) {
      first = false;
      try {
        const base = `/api/v1/pipelines/${encodeURIComponent(current.pipeline_id)}`;
        const [p, v] = await Promise.all([get(base), get(`${base}/versions/${current.version}`)]);
        pipelineName = p.name;
        planned = v.pipeline.steps || [];
      } catch { planned = null; }
    }
    render(current);
    return !FINAL.has(current.status); // keep polling while it runs
  };
  let poller = poll(load, 1000);

  $("#retry").addEventListener("click", async (ev) => {
    const b = ev.currentTarget;
    busy(b, true, "Retrying…");
    try {
      const out = await post(`${path}/retry`);
      location.assign(`/runs/${encodeURIComponent(out.run_id || out.id)}`);
    } catch (e) {
      toast(errorText(e), "bad", 8000);
      busy(b, false);
    }
  });
  $("#cancel").addEventListener("click", async (ev) => {
    const b = ev.currentTarget;
    busy(b, true, "Cancelling…");
    try {
      current = await post(`${path}/cancel`);
      render(current);
      poller.stop();
      poller = poll(load, 1000);
    } catch (e) {
      toast(errorText(e), "bad", 8000);
    } finally {
      busy(b, false);
    }
  });
}

start(main);
