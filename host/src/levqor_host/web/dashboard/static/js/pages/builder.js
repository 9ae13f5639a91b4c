import { get, post, put, del, qs, ApiError } from "../api.js";
import { boot, start } from "../common.js";
import { showProblems, clearProblems } from "../schemaform.js";
import { $, h, clear, toast, busy, errorText, copyButton, fmtTime, pageIds, show } from "../ui.js";
import { FlowEditor } from "../flow/editor.js";
import { cleanDoc } from "../flow/model.js";
import { fieldPicker, flatten, localSources, mergeSources } from "../flow/picker.js";
import { stepTester } from "../flow/steptest.js";
import { lineDiff } from "../diff.js";
import { newAppTrigger, renderAppTrigger, triggerConnectors, triggerState } from "../flow/apptrigger.js";

let saved = null; // the stored pipeline (after load or save)
let doc = { levqor: 1, trigger: { type: "manual" }, steps: [] };
let pipelines = []; // the user's pipelines (sub-pipeline and error pipeline choices)
let editor = null; // the flow editor of the steps
let dirty = false;
let catalog = {}; // the installed connectors by name
let creds = []; // the user's credentials
let limits = { min_interval: 60, default_interval: 300 }; // polling intervals (GET /api/v1/connectors)
let testedItems = null; // the last "Test trigger" items (the field picker's trigger.* sample)
let testedNote = "";

function markDirty() {
  dirty = true;
  $("#save-status").textContent = saved ? "unsaved changes" : "not saved yet";
}

// ------------------------------------------------------------------ trigger
function renderTrigger() {
  const t = doc.trigger || { type: "manual" };
  $("#trigger-type").value = t.type;
  $("#trigger-webhook").hidden = t.type !== "webhook";
  $("#trigger-schedule").hidden = t.type !== "schedule";
  $("#trigger-app").hidden = t.type !== "app";
  if (t.type === "app") {
    renderAppTrigger($("#trigger-app"), {
      catalog, creds, limits, doc,
      items: testedItems,
      itemsNote: testedNote,
      onChange: markDirty,
      onItems: (items, note) => { testedItems = items; testedNote = note || ""; },
    });
  }
  // only a saved webhook-triggered pipeline has a URL (any other answers 404)
  $("#webhook-url").value = (saved && saved.webhook_url) || "";
  $("#webhook-wait").checked = !!t.wait;
  $("#webhook-sig").checked = !!t.require_signature;
  $("#cron").value = t.cron || "";
  $("#timezone").value = t.timezone || "";
  if (t.type === "schedule") previewCron();
}

function setTriggerType(type) {
  const old = doc.trigger || {};
  if (type === "webhook") doc.trigger = { type, ...(old.wait ? { wait: true } : {}), ...(old.require_signature ? { require_signature: true } : {}) };
  else if (type === "schedule") doc.trigger = { type, cron: old.cron || "0 9 * * 1-5", timezone: old.timezone || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC" };
  else if (type === "app") {
    const first = triggerConnectors(catalog)[0];
    doc.trigger = first ? newAppTrigger(first, limits) : { type, connector: "", trigger: "", config: {} };
    testedItems = null;
  }
  else doc.trigger = { type: "manual" };
  renderTrigger();
  markDirty();
}

let cronTimer = null;
let cronSeq = 0;
function previewCron() {
  clearTimeout(cronTimer);
  cronTimer = setTimeout(async () => {
    const seq = ++cronSeq;
    const list = $("#next-fires");
    const trig = doc.trigger;
    if (!trig || trig.type !== "schedule") return;
    const section = $("#trigger-schedule");
    if (!trig.cron) { clearProblems(section); clear(list, h("li", { class: "muted" }, "type a cron expression")); return; }
    try {
      const out = await get("/api/v1/schedule/preview" + qs({ cron: trig.cron, timezone: trig.timezone || "UTC", count: 5 }));
      if (seq !== cronSeq) return;
      clearProblems(section);
      const tz = out.timezone;
      clear(list, out.next.length ? out.next.map((iso) => h("li", { "data-iso": iso },
        new Date(iso).toLocaleString(undefined, { timeZone: tz, dateStyle: "full", timeStyle: "short" }), ` (${tz})`))
        : h("li", { class: "muted" }, "never fires"));
    } catch (e) {
      if (seq !== cronSeq) return;
      if (e instanceof ApiError && e.problems.length) {
        showProblems(section, e.problems);
        $(e.problems[0].pointer === "/trigger/timezone" ? "#timezone" : "#cron").focus();
        clear(list, h("li", { class: "muted" }, "fix the expression to see the next fire times"));
      } else {
        clear(list, h("li", { class: "form-error" }, errorText(e)));
      }
    }
  }, 350);
}

// ------------------------------------------------------------------ steps
/** A test's output was pinned: the stored pipeline has a new version with it (edits kept). */
async function pinned(p) {
  const edited = dirty;
  if (p.pipeline.pinned) doc.pinned = p.pipeline.pinned; else delete doc.pinned;
  setSaved(p);
  serverFields = null;
  if (edited) markDirty();
  await loadVersions();
}


let serverFields = null; // the saved pipeline's field sources (GET .../fields), fetched once per save

/** The picker's sources: the saved pipeline's samples, and the document's steps not saved yet. */
async function fieldSources() {
  if (saved && !serverFields) {
    serverFields = get(`/api/v1/pipelines/${encodeURIComponent(saved.id)}/fields`).then((r) => r.sources).catch(() => []);
  }
  const sources = mergeSources(saved ? await serverFields : [], localSources(doc));
  if (testedItems && testedItems.length && doc.trigger && doc.trigger.type === "app") {
    // the last Test trigger's first item is the freshest sample of trigger.*
    return sources.map((s) => (s.kind === "trigger" ? { ...s, source: "test", fields: flatten("trigger", "Trigger", testedItems[0]) } : s));
  }
  return sources;
}

// ------------------------------------------------------------------ on/off and the trigger's status
function renderState(p) {
  $("#pl-state").hidden = false;
  $("#pl-enabled").checked = !!p.enabled;
  const st = triggerState(p, fmtTime);
  const el = $("#trigger-status");
  el.textContent = st.text;
  el.dataset.state = st.state;
  el.className = `small${st.state === "failing" || st.state === "paused" ? " trigger-failing" : ""}`;
}

async function toggleEnabled(ev) {
  const box = ev.target;
  const on = box.checked;
  box.disabled = true;
  try {
    const p = await post(`/api/v1/pipelines/${encodeURIComponent(saved.id)}/${on ? "enable" : "disable"}`, {});
    saved = { ...saved, enabled: p.enabled, trigger_status: p.trigger_status };
    renderState(saved);
    toast(on ? "On: its trigger starts runs" : "Off: its trigger starts no run", "ok");
  } catch (e) {
    box.checked = !on;
    toast(errorText(e), "bad", 8000);
  } finally {
    box.disabled = false;
  }
}

function render() {
  editor.render(doc, [[$("#flow"), "steps", "at the end of the pipeline"], [$("#failure-flow"), "on_failure", "to the steps run when the run fails"]]);
  renderErrorPipeline();
}

function renderErrorPipeline() {
  const sel = $("#error-pipeline");
  const mine = pipelines.filter((p) => !saved || p.id !== saved.id);
  clear(sel, h("option", { value: "" }, "(none)"), mine.map((p) => h("option", { value: p.id }, `${p.name} (${p.id})`)),
    doc.error_pipeline && !mine.some((p) => p.id === doc.error_pipeline) ? h("option", { value: doc.error_pipeline }, `${doc.error_pipeline} (not found)`) : null);
  sel.value = doc.error_pipeline || "";
}

// ------------------------------------------------------------------ problems and warnings
function showAll(problems, warnings) {
  const root = $("#builder-form");
  const left = showProblems(root, problems || []);
  const box = $("#problems");
  if (problems && problems.length) {
    clear(box, h("li", {}, h("strong", {}, `${problems.length} problem${problems.length > 1 ? "s" : ""} to fix:`)),
      problems.map((p) => h("li", { "data-pointer": p.pointer }, h("code", {}, p.pointer || "/"), " ", p.message)));
    box.hidden = false;
    if (left.length === problems.length) box.scrollIntoView({ block: "center" });
  } else {
    box.hidden = true;
  }
  const wbox = $("#warnings");
  // a save's warning names a pointer: find the step's connector and credential name there
  warnings = (warnings || []).map((w) => {
    const m = /^(\/.+)\/credential$/.exec(w.pointer || "");
    const step = m ? atPointer(doc, m[1]) : null;
    return step && !w.credential ? { ...w, credential: step.credential, connector: step.connector, message: `add a ${step.connector} credential named '${step.credential}' before running` } : w;
  });
  if (warnings.length) {
    clear(wbox, warnings.map((w) => h("li", {}, w.credential && w.connector
      ? h("span", {}, w.message.replace(/\s*\(POST \/api\/v1\/credentials\)/, ""), ": ",
        h("a", { href: `/credentials${qs({ connector: w.connector, name: w.credential })}` }, "add it now"))
      : w.message)));
    wbox.hidden = false;
  } else {
    wbox.hidden = true;
  }
}

/** The value at a JSON pointer of `root` (undefined when there is none). */
function atPointer(root, pointer) {
  let v = root;
  for (const part of pointer.split("/").slice(1)) {
    if (v === null || typeof v !== "object") return undefined;
    v = v[part.replace(/~1/g, "/").replace(/~0/g, "~")];
  }
  return v;
}

function localProblems() {
  const out = editor.problems();
  if (!doc.steps.length) out.push({ pointer: "/steps", message: "add at least one step" });
  return out;
}

// ------------------------------------------------------------------ load, save, run
function setSaved(p) {
  saved = p;
  dirty = false;
  $("#pl-name").value = p.name;
  $("#pl-meta").textContent = `Version ${p.version} · saved ${fmtTime(p.updated_at)} · ${p.id}`;
  $("#page-title").textContent = p.name;
  document.title = `${p.name} · Levqor`;
  $("#run-section").hidden = false;
  $("#archive").hidden = false;
  $("#versions-section").hidden = false;
  $("#save-status").textContent = `saved as version ${p.version}`;
  $("#run-note").textContent = "";
  $("#webhook-url").value = p.webhook_url || "";
  renderState(p);
}

async function save(ev) {
  ev.preventDefault();
  const btn = $("#save");
  const local = localProblems();
  if (local.length) { showAll(local, []); return; }
  busy(btn, true, "Saving…");
  const name = $("#pl-name").value.trim() || doc.name || "Untitled pipeline";
  try {
    cleanDoc(doc);
    const body = { name, pipeline: doc };
    const out = saved ? await put(`/api/v1/pipelines/${encodeURIComponent(saved.id)}`, body) : await post("/api/v1/pipelines", body);
    const isNew = !saved;
    setSaved(out);
    serverFields = null;
    editor.selfId = out.id;
    doc = out.pipeline;
    render();
    renderTrigger();
    showAll([], out.warnings);
    toast(`Saved version ${out.version}`, "ok");
    if (isNew) history.replaceState(null, "", `/pipelines/${encodeURIComponent(out.id)}`);
    await loadVersions();
  } catch (e) {
    if (e instanceof ApiError && e.problems.length) showAll(e.problems, []);
    else { showAll([], []); toast(errorText(e), "bad", 8000); }
  } finally {
    busy(btn, false);
  }
}

async function runNow(ev) {
  ev.preventDefault();
  const err = $("#run-error");
  show(err, "");
  let input;
  try { input = JSON.parse($("#run-input").value || "{}"); }
  catch (e) { show(err, `Trigger data is not valid JSON: ${e.message}`); $("#run-input").focus(); return; }
  const btn = $("#run-now");
  busy(btn, true, "Starting…");
  try {
    const out = await post("/api/v1/run", { pipeline_id: saved.id, input });
    location.assign(`/runs/${encodeURIComponent(out.run_id)}`);
  } catch (e) {
    if (e instanceof ApiError && e.problems.length) {
      showAll(e.problems, []);
      show(err, `${e.message}: see the problems above`);
    } else {
      show(err, errorText(e));
    }
    busy(btn, false);
  }
}

async function plan(ev) {
  ev.preventDefault();
  const err = $("#plan-error");
  show(err, "");
  const prompt = $("#prompt").value.trim();
  if (!prompt) { show(err, "Describe what the pipeline should do."); $("#prompt").focus(); return; }
  const btn = $("#plan-submit");
  const spin = $("#plan-spinner");
  busy(btn, true);
  spin.hidden = false;
  $("#plan-form").setAttribute("aria-busy", "true");
  try {
    const body = { prompt, dry_run: true };
    const name = $("#pl-name").value.trim();
    if (name) body.name = name;
    const out = await post("/api/v1/plan", body);
    doc = out.pipeline;
    if (!$("#pl-name").value.trim()) $("#pl-name").value = out.name || "";
    show($("#plan-explanation"), out.explanation ? `The plan: ${out.explanation}` : "Planned. Check the steps below, then save.");
    markDirty();
    render();
    renderTrigger();
    showAll([], out.warnings);
    $("#steps-title").scrollIntoView({ block: "start" });
  } catch (e) {
    if (e instanceof ApiError && e.problems.length) {
      show(err, `${e.message}: ${e.problems.map((p) => `${p.pointer} ${p.message}`).join("; ")}`);
    } else {
      show(err, errorText(e));
    }
  } finally {
    spin.hidden = true;
    $("#plan-form").removeAttribute("aria-busy");
    busy(btn, false);
  }
}

// ------------------------------------------------------------------ versions
let versions = [];
async function loadVersions() {
  if (!saved) return;
  const out = await get(`/api/v1/pipelines/${encodeURIComponent(saved.id)}/versions`);
  versions = out.items.slice().sort((a, b) => b.version - a.version);
  clear($("#versions"), versions.map((v) => h("li", {}, `Version ${v.version}`, v.version === saved.version ? " (current)" : "", h("span", { class: "muted" }, ` · ${fmtTime(v.created_at)}`))));
  const a = $("#diff-a");
  const b = $("#diff-b");
  const opts = () => versions.map((v) => h("option", { value: String(v.version) }, `version ${v.version}`));
  clear(a, opts());
  clear(b, opts());
  b.value = String(versions[0].version);
  a.value = String((versions[1] || versions[0]).version);
  $("#diff").hidden = true;
}

async function versionDoc(n) {
  return (await get(`/api/v1/pipelines/${encodeURIComponent(saved.id)}/versions/${n}`)).pipeline;
}

async function showDiff(ev) {
  ev.preventDefault();
  const va = $("#diff-a").value;
  const vb = $("#diff-b").value;
  const [da, db] = await Promise.all([versionDoc(va), versionDoc(vb)]);
  const lines = lineDiff(JSON.stringify(da, null, 2).split("\n"), JSON.stringify(db, null, 2).split("\n"));
  const pre = $("#diff");
  const changed = lines.filter((l) => l.op !== " ").length;
  clear(pre, h("span", { class: "same" }, `--- version ${va}\n+++ version ${vb}\n${changed ? "" : "(no difference)\n"}`),
    lines.map((l) => h("span", { class: l.op === "+" ? "ins" : l.op === "-" ? "del" : "same" }, `${l.op} ${l.text}`)));
  pre.hidden = false;
  pre.focus();
}

async function loadVersion() {
  const n = $("#diff-a").value;
  doc = await versionDoc(n);
  markDirty();
  render();
  renderTrigger();
  toast(`Version ${n} is in the editor: save to make it the current version`);
}

// ------------------------------------------------------------------ start
async function main() {
  await boot();
  const { pipeline_id: pid } = pageIds();
  const [cat, cr, pls] = await Promise.all([get("/api/v1/connectors"), get("/api/v1/credentials"), get("/api/v1/pipelines")]);
  pipelines = pls.items;
  catalog = Object.fromEntries(cat.connectors.map((c) => [c.name, c]));
  creds = cr.items;
  if (cat.polling) limits = { min_interval: cat.polling.min_interval, default_interval: cat.polling.default_interval };
  editor = new FlowEditor({
    catalog,
    creds: cr.items,
    pipelines,
    selfId: pid || null,
    onChange: markDirty,
    cardTools: stepTester({ catalog, pipelineId: () => (saved ? saved.id : null), dirty: () => dirty, onPinned: pinned }),
    picker: fieldPicker(fieldSources),
  });
  if (pid) {
    try {
      const p = await get(`/api/v1/pipelines/${encodeURIComponent(pid)}`);
      doc = p.pipeline;
      setSaved(p);
      await loadVersions();
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        show($("#plan-error"), "This pipeline does not exist, or is not yours.");
        $("#builder-form").hidden = true;
        return;
      }
      throw e;
    }
  } else {
    $("#save-status").textContent = "not saved yet";
  }
  // time zones for the datalist
  try {
    const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [];
    clear($("#timezones"), ["UTC", ...zones].map((z) => h("option", { value: z })));
  } catch { /* older browsers: free text */ }

  render();
  renderTrigger();
  $("#plan-form").addEventListener("submit", plan);
  $("#builder-form").addEventListener("submit", save);
  $("#run-form").addEventListener("submit", runNow);
  $("#pl-enabled").addEventListener("change", toggleEnabled);
  $("#error-pipeline").addEventListener("change", (e) => { if (e.target.value) doc.error_pipeline = e.target.value; else delete doc.error_pipeline; markDirty(); });
  $("#trigger-type").addEventListener("change", (e) => setTriggerType(e.target.value));
  $("#webhook-wait").addEventListener("change", (e) => { if (e.target.checked) doc.trigger.wait = true; else delete doc.trigger.wait; markDirty(); });
  $("#webhook-sig").addEventListener("change", (e) => { if (e.target.checked) doc.trigger.require_signature = true; else delete doc.trigger.require_signature; markDirty(); });
  $("#cron").addEventListener("input", (e) => { doc.trigger.cron = e.target.value.trim(); markDirty(); previewCron(); });
  $("#timezone").addEventListener("input", (e) => { const v = e.target.value.trim(); if (v) doc.trigger.timezone = v; else delete doc.trigger.timezone; markDirty(); previewCron(); });
  $("#pl-name").addEventListener("input", markDirty);
  $("#copy-webhook").replaceWith(Object.assign(copyButton(() => $("#webhook-url").value, "Copy"), { id: "copy-webhook" }));
  $("#diff-form").addEventListener("submit", showDiff);
  $("#load-version").addEventListener("click", loadVersion);
  const archive = $("#archive");
  let armed = false;
  archive.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      archive.textContent = "Really archive? Its webhook and schedule stop";
      setTimeout(() => { armed = false; archive.textContent = "Archive"; }, 5000);
      return;
    }
    busy(archive, true, "Archiving…");
    try {
      await del(`/api/v1/pipelines/${encodeURIComponent(saved.id)}`);
      dirty = false;
      location.assign("/?archived=1");
    } catch (e) { toast(errorText(e), "bad", 8000); busy(archive, false); }
  });
  window.addEventListener("beforeunload", (e) => { if (dirty && saved) { e.preventDefault(); } });
}

start(main);
