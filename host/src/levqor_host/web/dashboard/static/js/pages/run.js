import { get, post, ApiError } from "../api.js";
import { boot, start } from "../common.js";
import { $, h, clear, badge, fmtTime, fmtDuration, jsonPre, poll, toast, busy, errorText, pageIds, show } from "../ui.js";
import { RunTree, errorBlock, tokensText } from "../flow/runtree.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);
let planned = null; // the pipeline version's top-level steps, to show those not reached yet
let pipelineName = null;
let tree = null;

function pendingCard(step) {
  return h("li", { class: "run-step pending", "data-step": step.id, "data-status": "pending" },
    h("h3", {}, h("span", { class: "mono" }, step.id), badge("pending"),
      h("span", { class: "muted small" }, step.type ? step.type : `${step.connector}.${step.action}`)));
}

const runLink = (id) => h("a", { href: `/runs/${encodeURIComponent(id)}`, class: "mono" }, id);

function renderWait(run) {
  const w = run.status === "waiting" ? run.wait : null;
  $("#wait").hidden = !w;
  $("#approval").hidden = !(w && w.kind === "approval");
  if (!w) return;
  const text = $("#wait-text");
  if (w.kind === "approval") {
    clear(text, "Step ", h("code", {}, w.step || "?"), " waits for someone to approve or reject this run.");
    $("#approval-message").textContent = w.message || "(no message)";
    $("#approval-expires").textContent = w.expires_at
      ? `Unless decided, it is ${w.on_timeout === "approve" ? "approved" : "rejected"} on ${fmtTime(w.expires_at)}.` : "";
  } else if (w.kind === "pipeline") {
    clear(text, "Step ", h("code", {}, w.step || "?"), " waits for the sub-pipeline run ",
      w.child_run_id ? runLink(w.child_run_id) : "(starting)", w.pipeline ? ` of ${w.pipeline}` : "", " to finish.");
  } else {
    clear(text, "Step ", h("code", {}, w.step || "?"), w.until ? ` waits until ${fmtTime(w.until)}.` : " waits.");
  }
}

function facts(run) {
  const children = run.children || [];
  return [
    h("dt", {}, "Pipeline"), h("dd", {}, h("a", { href: `/pipelines/${encodeURIComponent(run.pipeline_id)}` }, pipelineName || run.pipeline_id), ` version ${run.version}`),
    h("dt", {}, "Trigger"), h("dd", {}, run.trigger || "—"),
    run.retry_of ? [h("dt", {}, "Retry of"), h("dd", {}, runLink(run.retry_of))] : null,
    run.parent_run_id ? [h("dt", {}, "Started by"), h("dd", { id: "parent-run" }, runLink(run.parent_run_id), run.parent_step ? [" at step ", h("code", {}, run.parent_step)] : null)] : null,
    children.length ? [h("dt", {}, "Sub-pipeline runs"), h("dd", { id: "child-runs" }, children.map((c, i) => [i ? ", " : "", runLink(typeof c === "string" ? c : c.id)]))] : null,
    h("dt", {}, "Queued"), h("dd", {}, fmtTime(run.created_at)),
    h("dt", {}, "Started"), h("dd", {}, fmtTime(run.started_at)),
    h("dt", {}, "Finished"), h("dd", {}, fmtTime(run.finished_at)),
    h("dt", {}, "Took"), h("dd", {}, run.started_at ? fmtDuration(run.started_at, run.finished_at) : "—"),
    tokensText(run.usage) ? [h("dt", {}, "Tokens"), h("dd", { id: "run-tokens", class: "usage-tokens", "data-tokens": String(run.usage.total_tokens) }, tokensText(run.usage),
      Object.keys(run.usage.by_model || {}).length > 1
        ? h("span", { class: "muted small" }, ` (${Object.entries(run.usage.by_model).map(([m, u]) => `${m}: ${Number(u.input_tokens || 0) + Number(u.output_tokens || 0)}`).join(", ")})`) : null)] : null,
    h("dt", {}, "Input"), h("dd", {}, h("details", {}, h("summary", {}, "show"), jsonPre(run.input ?? {}))),
    run.output !== undefined && run.output !== null ? [h("dt", {}, "Output"), h("dd", {}, h("details", {}, h("summary", {}, "show"), jsonPre(run.output)))] : null,
  ];
}

function render(run) {
  document.title = `Run ${run.status} · Levqor`;
  $("#run-id").textContent = run.id;
  const st = $("#run-status");
  st.textContent = run.status + (run.cancel_requested && !FINAL.has(run.status) ? " (cancelling)" : "");
  st.className = `badge ${run.status}`;
  st.dataset.runStatus = run.status;
  $("#run-poll").hidden = FINAL.has(run.status);
  clear($("#run-facts"), facts(run));
  clear($("#run-error"), run.error ? errorBlock(run.error) : null);
  renderWait(run);
  $("#retry").hidden = !(run.status === "failed" || run.status === "cancelled");
  $("#cancel").hidden = FINAL.has(run.status) || run.cancel_requested;
  const seen = new Set((run.steps || []).map((s) => s.id));
  const cards = tree.cards(tree.adopt(run.steps || []));
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
      let doc = null;
      try {
        const base = `/api/v1/pipelines/${encodeURIComponent(current.pipeline_id)}`;
        const [p, v] = await Promise.all([get(base), get(`${base}/versions/${current.version}`)]);
        pipelineName = p.name;
        doc = v.pipeline;
        planned = doc.steps || [];
      } catch { planned = null; }
      tree = new RunTree(runId, doc);
      tree.onMore = () => render(current);
      tree.onDecide = (verb, button) => decide(verb)({ currentTarget: button });
    }
    render(current);
    return !FINAL.has(current.status); // keep polling while it runs (or waits)
  };
  let poller = poll(load, 1000);
  const restart = () => { poller.stop(); poller = poll(load, 1000); };

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
      restart();
    } catch (e) {
      toast(errorText(e), "bad", 8000);
    } finally {
      busy(b, false);
    }
  });
  const decide = (verb) => async (ev) => {
    const b = ev.currentTarget;
    const err = $("#approval-error");
    show(err, "");
    busy(b, true, verb === "approve" ? "Approving…" : "Rejecting…");
    try {
      const comment = $("#approval-comment").value.trim();
      current = await post(`${path}/${verb}`, comment ? { comment } : {});
      $("#approval-comment").value = "";
      toast(verb === "approve" ? "Approved: the run goes on" : "Rejected", "ok");
      render(current);
      restart();
    } catch (e) {
      show(err, e instanceof ApiError && e.status === 409 ? `Already decided: ${e.message}` : errorText(e));
      restart();
    } finally {
      busy(b, false);
    }
  };
  $("#approve").addEventListener("click", decide("approve"));
  $("#reject").addEventListener("click", decide("reject"));
}

start(main);
