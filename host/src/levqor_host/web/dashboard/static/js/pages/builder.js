import { get, post, put, del, qs, ApiError } from "../api.js";
import { boot, start } from "../common.js";
import { objectForm, showProblems, clearProblems } from "../schemaform.js";
import { $, h, clear, toast, busy, errorText, copyButton, fmtTime, pageIds, nextId, show } from "../ui.js";
import { lineDiff } from "../diff.js";

let catalog = {}; // connector name -> connector (with actions)
let creds = []; // the user's credentials (names and connectors only)
let saved = null; // the stored pipeline (after load or save)
let doc = { levqor: 1, trigger: { type: "manual" }, steps: [] };
let forms = []; // per step: the payload form ({invalid()})
let dirty = false;

const STEP_ID = /^[a-z][a-z0-9_]{0,39}$/;

function markDirty() {
  dirty = true;
  $("#save-status").textContent = saved ? "unsaved changes" : "not saved yet";
}

function uniqueStepId(base) {
  const taken = new Set(doc.steps.map((s) => s.id));
  let id = (base || "step").toLowerCase().replace(/[^a-z0-9_]/g, "_").replace(/^[^a-z]+/, "") || "step";
  id = id.slice(0, 36);
  if (!taken.has(id)) return id;
  for (let i = 2; ; i += 1) if (!taken.has(`${id}_${i}`)) return `${id}_${i}`;
}

// ------------------------------------------------------------------ trigger
function renderTrigger() {
  const t = doc.trigger || { type: "manual" };
  $("#trigger-type").value = t.type;
  $("#trigger-webhook").hidden = t.type !== "webhook";
  $("#trigger-schedule").hidden = t.type !== "schedule";
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
function credentialSelect(step, i, connector) {
  const id = nextId("cred");
  const sel = h("select", { id, "aria-describedby": `${id}-help` });
  const mine = creds.filter((c) => c.connector === connector.name);
  sel.append(h("option", { value: "" }, connector.credentials_required ? "choose…" : "(none)"));
  for (const c of mine) sel.append(h("option", { value: c.name }, c.name));
  if (step.credential && !mine.some((c) => c.name === step.credential)) {
    sel.append(h("option", { value: step.credential }, `${step.credential} (not added yet)`));
  }
  sel.value = step.credential || "";
  sel.addEventListener("change", () => {
    if (sel.value) step.credential = sel.value; else delete step.credential;
    markDirty();
  });
  const missing = step.credential && !mine.some((c) => c.name === step.credential);
  const link = h("a", {
    href: `/credentials${qs({ connector: connector.name, name: step.credential || "" })}`,
  }, missing ? `Add the ${connector.title} credential "${step.credential}"` : `Add a ${connector.title} credential`);
  return h("div", { class: "field", "data-pointer": `/steps/${i}/credential` },
    h("label", { for: id }, "Credential", connector.credentials_required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null),
    sel, h("small", { class: "help", id: `${id}-help` }, link),
    h("p", { class: "field-error", hidden: true }));
}

function stepCard(step, i) {
  const connector = catalog[step.connector];
  const action = connector ? connector.actions[step.action] : null;
  const idInput = nextId("sid");
  const conSel = nextId("con");
  const actSel = nextId("act");
  const nameId = nextId("sname");

  const idField = h("input", { id: idInput, value: step.id, maxlength: "40", required: true, pattern: "[a-z][a-z0-9_]{0,39}", class: "mono", "aria-describedby": `${idInput}-help` });
  idField.addEventListener("input", () => { step.id = idField.value.trim(); markDirty(); });
  idField.addEventListener("change", () => render());

  const nameField = h("input", { id: nameId, value: step.name || "", maxlength: "200", placeholder: action ? action.title : "" });
  nameField.addEventListener("input", () => { if (nameField.value) step.name = nameField.value; else delete step.name; markDirty(); });

  const cs = h("select", { id: conSel, required: true });
  if (!connector) cs.append(h("option", { value: step.connector }, `${step.connector} (not installed)`));
  for (const c of Object.values(catalog)) cs.append(h("option", { value: c.name }, c.title));
  cs.value = step.connector;
  cs.addEventListener("change", () => {
    step.connector = cs.value;
    const c = catalog[cs.value];
    step.action = c ? Object.keys(c.actions)[0] : "";
    step.payload = {};
    delete step.credential;
    markDirty();
    render();
  });

  const as = h("select", { id: actSel, required: true });
  if (connector) for (const [n, a] of Object.entries(connector.actions)) as.append(h("option", { value: n }, a.title));
  if (!action) as.append(h("option", { value: step.action }, `${step.action} (unknown)`));
  as.value = step.action;
  as.addEventListener("change", () => { step.action = as.value; step.payload = {}; markDirty(); render(); });

  const move = (d) => {
    const j = i + d;
    if (j < 0 || j >= doc.steps.length) return;
    [doc.steps[i], doc.steps[j]] = [doc.steps[j], doc.steps[i]];
    markDirty();
    render();
    $(`#step-list > li:nth-child(${j + 1}) h3`).focus();
  };
  const header = h("header", {},
    h("h3", { tabindex: "-1" }, `Step ${i + 1}: `, h("span", { class: "mono" }, step.id)),
    h("button", { type: "button", class: "secondary small", "aria-label": `Move step ${step.id} up`, disabled: i === 0, on: { click: () => move(-1) } }, "↑"),
    h("button", { type: "button", class: "secondary small", "aria-label": `Move step ${step.id} down`, disabled: i === doc.steps.length - 1, on: { click: () => move(1) } }, "↓"),
    h("button", { type: "button", class: "danger small", "aria-label": `Remove step ${step.id}`, on: { click: () => { doc.steps.splice(i, 1); markDirty(); render(); } } }, "Remove"));

  let payloadPart;
  if (action) {
    const form = objectForm(action.payload, step.payload, `/steps/${i}/payload`, {
      example: action.example,
      idPrefix: `s${i}`,
      onChange: (v) => { step.payload = v; markDirty(); },
    });
    step.payload = form.value();
    forms[i] = form;
    payloadPart = h("fieldset", { "data-pointer": `/steps/${i}/payload` },
      h("legend", {}, action.title), action.description ? h("p", { class: "help" }, action.description) : null,
      h("p", { class: "help" }, "Use {{ trigger.field }} or {{ steps.<id>.output.field }} to pass data along."),
      form.element, h("p", { class: "field-error", hidden: true }));
  } else {
    forms[i] = null;
    payloadPart = h("p", { class: "notice bad" }, `Connector ${step.connector} or action ${step.action} is not installed here.`);
  }

  return h("li", { class: "step-card", "data-step-index": String(i), "data-step-id": step.id },
    header,
    h("div", { class: "grid2" },
      h("div", { class: "field", "data-pointer": `/steps/${i}/id` },
        h("label", { for: idInput }, "Step id", h("span", { class: "req", "aria-hidden": "true" }, " *")), idField,
        h("small", { class: "help", id: `${idInput}-help` }, "lower case letters, digits and _; later steps refer to it"),
        h("p", { class: "field-error", hidden: true })),
      h("div", { class: "field", "data-pointer": `/steps/${i}/name` },
        h("label", { for: nameId }, "Label (optional)"), nameField, h("p", { class: "field-error", hidden: true })),
      h("div", { class: "field", "data-pointer": `/steps/${i}/connector` },
        h("label", { for: conSel }, "Connector"), cs, h("p", { class: "field-error", hidden: true })),
      h("div", { class: "field", "data-pointer": `/steps/${i}/action` },
        h("label", { for: actSel }, "Action"), as, h("p", { class: "field-error", hidden: true })),
      connector && connector.credentials ? credentialSelect(step, i, connector) : null),
    payloadPart);
}

function render() {
  forms = [];
  const list = $("#step-list");
  clear(list, doc.steps.length ? doc.steps.map(stepCard)
    : h("li", { class: "muted" }, "No step yet: plan from plain words above, or add a step."));
}

function addStep() {
  const c = catalog.slack || Object.values(catalog)[0];
  const action = Object.keys(c.actions)[0];
  doc.steps.push({ id: uniqueStepId(c.name), connector: c.name, action, payload: {} });
  markDirty();
  render();
  const cards = document.querySelectorAll("#step-list > li");
  cards[cards.length - 1].querySelector("h3").focus();
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
    const m = /^\/steps\/(\d+)\/credential$/.exec(w.pointer || "");
    const step = m ? doc.steps[Number(m[1])] : null;
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

function localProblems() {
  const out = [];
  doc.steps.forEach((s, i) => {
    if (!STEP_ID.test(s.id || "")) out.push({ pointer: `/steps/${i}/id`, message: "a step id starts with a letter and has only a-z, 0-9 and _ (at most 40)" });
    const f = forms[i];
    if (f) for (const p of f.invalid()) out.push({ pointer: p.replace(/#extra$/, ""), message: "not valid JSON" });
  });
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
}

async function save(ev) {
  ev.preventDefault();
  const btn = $("#save");
  const local = localProblems();
  if (local.length) { showAll(local, []); return; }
  busy(btn, true, "Saving…");
  const name = $("#pl-name").value.trim() || doc.name || "Untitled pipeline";
  try {
    const body = { name, pipeline: doc };
    const out = saved ? await put(`/api/v1/pipelines/${encodeURIComponent(saved.id)}`, body) : await post("/api/v1/pipelines", body);
    const isNew = !saved;
    setSaved(out);
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
  const [cat, cr] = await Promise.all([get("/api/v1/connectors"), get("/api/v1/credentials")]);
  catalog = Object.fromEntries(cat.connectors.map((c) => [c.name, c]));
  creds = cr.items;
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
  $("#add-step").addEventListener("click", addStep);
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
