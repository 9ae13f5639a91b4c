// The builder's "App event" trigger: an installed connector's trigger (a new row, a new
// message...), the credential it reads with, its settings (a form generated from the trigger's
// config schema) and, for a polling trigger, how often it is checked. "Test trigger" fetches
// sample items now (POST /api/v1/triggers/test: nothing is recorded) to build later steps with.

import { post, qs, ApiError } from "../api.js";
import { objectForm, showProblems, clearProblems } from "../schemaform.js";
import { h, clear, nextId, errorText } from "../ui.js";
import { field } from "./fields.js";

/** The connectors of `catalog` that offer at least one trigger. */
export function triggerConnectors(catalog) {
  return Object.values(catalog).filter((c) => c.triggers && Object.keys(c.triggers).length);
}

/** "every 5 min", "every 90 s", "every 2 h" for an interval in seconds. */
export function everyText(seconds) {
  const s = Math.max(1, Math.round(seconds));
  if (s % 3600 === 0) return `every ${s / 3600} h`;
  if (s % 60 === 0) return `every ${s / 60} min`;
  return `every ${s} s`;
}

/** How a trigger starts runs: "instant", or "every N min" for a polling one. */
export function kindText(trig, interval) {
  return trig.kind === "instant" ? "instant" : everyText(interval);
}

/** A fresh app trigger for `connector` (its first trigger, its example config). */
export function newAppTrigger(connector, limits, name) {
  const tname = name || Object.keys(connector.triggers)[0];
  const t = connector.triggers[tname];
  const out = { type: "app", connector: connector.name, trigger: tname, config: structuredClone(t.example || {}) };
  if (t.kind === "polling") out.interval = limits.default_interval;
  return out;
}

/**
 * Render the form of the app trigger `doc.trigger` into `root`.
 *   ctx: {catalog, creds, limits: {min_interval, default_interval}, doc, onChange(), onItems(items)}
 */
export function renderAppTrigger(root, ctx) {
  const { catalog, creds, limits, doc } = ctx;
  const trig = doc.trigger;
  const connectors = triggerConnectors(catalog);
  const rerender = () => renderAppTrigger(root, ctx);
  const changed = () => ctx.onChange();
  if (!connectors.length) {
    clear(root, h("p", { class: "notice warn" }, "No installed connector offers a trigger."));
    return;
  }
  const connector = catalog[trig.connector];
  const t = connector && connector.triggers ? connector.triggers[trig.trigger] : null;

  // connector
  const cs = h("select", { id: "app-connector", required: true });
  if (!connector || !connector.triggers) cs.append(h("option", { value: trig.connector || "" }, `${trig.connector || "choose…"}${trig.connector ? " (not installed)" : ""}`));
  for (const c of connectors) cs.append(h("option", { value: c.name }, c.title));
  cs.value = trig.connector || "";
  cs.addEventListener("change", () => {
    doc.trigger = newAppTrigger(catalog[cs.value], limits);
    ctx.onItems(null);
    changed();
    rerender();
  });

  // trigger, with how it starts runs
  const interval = trig.interval || limits.default_interval;
  const ts = h("select", { id: "app-trigger", required: true });
  if (connector && connector.triggers) {
    for (const [n, x] of Object.entries(connector.triggers)) {
      ts.append(h("option", { value: n, "data-kind": x.kind }, `${x.title} (${kindText(x, interval)})`));
    }
  }
  if (!t) ts.append(h("option", { value: trig.trigger || "" }, `${trig.trigger || "?"} (unknown)`));
  ts.value = trig.trigger || "";
  ts.addEventListener("change", () => {
    doc.trigger = { ...newAppTrigger(connector, limits, ts.value), ...(trig.credential ? { credential: trig.credential } : {}) };
    ctx.onItems(null);
    changed();
    rerender();
  });

  const grid = [field("/trigger/connector", "App", cs), field("/trigger/trigger", "Event", ts)];
  if (connector && connector.credentials) grid.push(credentialField(ctx, connector));

  if (!t) {
    clear(root, h("div", { class: "grid2" }, grid),
      h("p", { class: "notice bad" }, `Connector ${trig.connector} has no trigger ${trig.trigger} here.`));
    return;
  }

  const body = [];
  if (t.description) body.push(h("p", { class: "help", id: "app-trigger-desc" }, t.description));
  body.push(h("p", { class: "small", id: "app-trigger-kind" }, t.kind === "instant"
    ? "Instant: the app calls this host when the event happens (registered when the pipeline is saved and switched on)."
    : `Checked ${everyText(interval)}; the first check only notes what is there already, so no run starts for old items.`));

  // the trigger's settings, a form from its config schema
  const form = objectForm(t.config || { type: "object" }, trig.config || {}, "/trigger/config", {
    example: t.example,
    idPrefix: nextId("tc"),
    jsonLabel: "Settings (JSON)",
    onChange: (v) => { trig.config = v; changed(); },
  });
  trig.config = form.value();
  const hasFields = t.config && (t.config.properties && Object.keys(t.config.properties).length || t.config.oneOf || t.config.anyOf);
  body.push(hasFields || Object.keys(trig.config).length
    ? h("fieldset", { "data-pointer": "/trigger/config" }, h("legend", {}, "Settings"), form.element, h("p", { class: "field-error", hidden: true }))
    : h("p", { class: "muted small" }, "This event has no settings."));

  // polling: how often, in minutes (the document keeps seconds)
  if (t.kind === "polling") {
    const minutes = h("input", {
      id: "app-interval", type: "number", inputmode: "decimal",
      min: String(limits.min_interval / 60), step: "any", required: true,
    });
    minutes.value = String(interval / 60);
    const help = `at least ${everyText(limits.min_interval).replace("every ", "")}; default ${everyText(limits.default_interval).replace("every ", "")}`;
    const f = field("/trigger/interval", "Check every (minutes)", minutes, help, { req: true });
    minutes.addEventListener("input", () => {
      const n = Number(minutes.value);
      const err = f.querySelector(".field-error");
      if (!minutes.value || Number.isNaN(n) || n * 60 < limits.min_interval) {
        err.textContent = `the shortest interval is ${everyText(limits.min_interval).replace("every ", "")}`;
        err.hidden = false;
        minutes.setAttribute("aria-invalid", "true");
        return;
      }
      err.hidden = true;
      minutes.removeAttribute("aria-invalid");
      trig.interval = Math.round(n * 60);
      const opt = ts.selectedOptions[0];
      if (opt) opt.textContent = `${t.title} (${kindText(t, trig.interval)})`;
      changed();
    });
    body.push(f);
  } else {
    delete trig.interval;
  }

  body.push(testPanel(ctx, t));
  clear(root, h("div", { class: "grid2" }, grid), ...body);
}

function credentialField(ctx, connector) {
  const trig = ctx.doc.trigger;
  const sel = h("select", { id: "app-credential" });
  const mine = ctx.creds.filter((c) => c.connector === connector.name);
  sel.append(h("option", { value: "" }, connector.credentials_required ? "choose…" : "(none)"));
  for (const c of mine) sel.append(h("option", { value: c.name }, c.account ? `${c.name} (${c.account})` : c.name));
  const missing = trig.credential && !mine.some((c) => c.name === trig.credential);
  if (missing) sel.append(h("option", { value: trig.credential }, `${trig.credential} (not added yet)`));
  sel.value = trig.credential || "";
  sel.addEventListener("change", () => {
    if (sel.value) trig.credential = sel.value; else delete trig.credential;
    ctx.onChange();
  });
  const verb = connector.oauth2 ? "Connect" : "Add";
  const link = h("a", { id: "app-add-credential", href: `/credentials${qs({ connector: connector.name, name: trig.credential || "" })}` },
    missing ? `Add the ${connector.title} credential "${trig.credential}"` : `${verb} a ${connector.title} account`);
  const f = field("/trigger/credential", "Account (credential)", sel, null, { req: connector.credentials_required });
  f.insertBefore(h("small", { class: "help" }, link), f.lastChild);
  return f;
}

function itemView(data) {
  return h("li", { class: "sample-item" }, h("pre", { class: "mono small" }, JSON.stringify(data, null, 2)));
}

function testPanel(ctx, t) {
  const out = h("div", { id: "trigger-samples", "aria-live": "polite" });
  const btn = h("button", { type: "button", class: "secondary", id: "test-trigger" }, "Test trigger");
  const note = h("small", { class: "help" }, t.kind === "instant"
    ? "Shows the event's sample item (an instant event cannot be fetched on demand)."
    : "Fetches items from the app now with these settings; nothing is recorded and no run starts.");
  if (ctx.items) show(out, ctx.items, ctx.itemsNote);
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    btn.setAttribute("aria-busy", "true");
    clearProblems(btn.closest("section") || document.body);
    clear(out, h("p", { class: "muted small" }, "Testing…"));
    try {
      const answer = await post("/api/v1/triggers/test", { trigger: ctx.doc.trigger });
      const note = answer.source === "sample" ? (answer.message || "the event's sample item") : "";
      ctx.onItems(answer.items, note);
      show(out, answer.items, note);
    } catch (e) {
      if (e instanceof ApiError && e.problems.length) {
        const left = showProblems(btn.closest("section") || document.body, e.problems);
        clear(out, h("p", { class: "form-error", role: "alert" }, `${e.message}`,
          left.length ? `: ${left.map((p) => `${p.pointer} ${p.message}`).join("; ")}` : ""));
      } else {
        clear(out, h("p", { class: "form-error", role: "alert" }, `The test failed: ${errorText(e)}`));
      }
    } finally {
      btn.disabled = false;
      btn.removeAttribute("aria-busy");
    }
  });
  return h("div", { class: "trigger-test" }, h("div", { class: "inline" }, btn), note, out);
}

function show(out, items, note) {
  if (!items || !items.length) {
    clear(out, h("p", { class: "muted small", id: "no-samples" }, "No item upstream right now: add one in the app and test again."));
    return;
  }
  clear(out, h("p", { class: "small" }, `${items.length} sample item${items.length === 1 ? "" : "s"}, newest first; the field picker offers the first one's fields as trigger.*`),
    note ? h("p", { class: "muted small" }, note) : null,
    h("ol", { class: "sample-items" }, items.map(itemView)));
}

function errorMessage(err) {
  if (!err) return "";
  if (typeof err === "string") return err;
  return err.message || err.code || JSON.stringify(err);
}

/**
 * What a pipeline's switch and trigger say, from the API's `enabled` and `trigger_status`:
 * {state: "off" | "on" | "active" | "failing" | "paused", text}.
 */
export function triggerState(p, fmtTime) {
  if (!p.enabled) return { state: "off", text: "Off: its trigger starts no run" };
  const s = p.trigger_status;
  if (!s) return { state: "on", text: "On" };
  if (s.status === "failing") return { state: "failing", text: `Trigger failing: ${errorMessage(s.last_error) || `${s.failures} failed checks`}` };
  if (s.status === "paused") return { state: "paused", text: `Trigger paused: ${errorMessage(s.last_error) || "reconnect its account"}` };
  if (s.kind === "instant") return { state: "active", text: "Listening for events (instant)" };
  const last = s.last_polled_at ? `last checked ${fmtTime(s.last_polled_at)}` : "not checked yet";
  const next = s.next_poll_at ? ` · next ${fmtTime(s.next_poll_at)}` : "";
  const every = s.interval ? `Checked ${everyText(s.interval)}` : "Checking";
  return { state: "active", text: `${every}: ${last}${next}` };
}
