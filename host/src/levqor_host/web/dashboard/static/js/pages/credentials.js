import { get, post, del, ApiError } from "../api.js";
import { boot, start } from "../common.js";
import { objectForm, showProblems, clearProblems } from "../schemaform.js";
import { $, h, clear, toast, busy, errorText, fmtTime } from "../ui.js";

let connectors = {};
let form = null;

function renderList(items) {
  const box = $("#cred-list");
  if (!items.length) { clear(box, h("p", { class: "muted" }, "No credential yet.")); return; }
  clear(box, h("ul", { class: "cards", id: "creds" }, items.map((c) => {
    const result = h("p", { class: "small", role: "status" });
    const test = h("button", { type: "button", class: "secondary small" }, "Test");
    test.addEventListener("click", async () => {
      busy(test, true, "Testing…");
      result.textContent = "";
      try {
        const out = await post(`/api/v1/credentials/${encodeURIComponent(c.id)}/test`);
        if (!out.supported) { result.className = "small muted"; result.textContent = out.message; }
        else if (out.ok) {
          result.className = "small"; result.replaceChildren(h("span", { class: "badge ok" }, "works"),
            Object.keys(out.details || {}).length ? ` ${Object.entries(out.details).map(([k, v]) => `${k}: ${v}`).join(", ")}` : "");
        } else { result.className = "small"; result.replaceChildren(h("span", { class: "badge bad" }, "failed"), ` ${out.message}`); }
      } catch (e) { result.className = "small form-error"; result.textContent = errorText(e); }
      finally { busy(test, false); }
    });
    const remove = h("button", { type: "button", class: "danger small" }, "Delete");
    let armed = false;
    remove.addEventListener("click", async () => {
      if (!armed) {
        armed = true;
        remove.textContent = `Really delete ${c.name}?`;
        setTimeout(() => { armed = false; remove.textContent = "Delete"; }, 5000);
        return;
      }
      busy(remove, true, "Deleting…");
      try {
        await del(`/api/v1/credentials/${encodeURIComponent(c.id)}`);
        toast(`Deleted ${c.name}`, "ok");
        await load();
      } catch (e) { toast(errorText(e), "bad", 8000); busy(remove, false); }
    });
    const con = connectors[c.connector];
    const connected = c.auth === "oauth2";
    const state = !connected ? null : c.status === "broken"
      ? h("p", { class: "small", "data-status": "broken" }, h("span", { class: "badge bad" }, "broken: reconnect"),
        " the service refused this account's access: connect it again with the same name.")
      : h("p", { class: "small", "data-status": "ok" }, h("span", { class: "badge ok" }, "connected"),
        c.account ? " as " : "", c.account ? h("strong", { class: "account" }, c.account) : "");
    const again = connected && con && con.oauth2
      ? h("button", { type: "button", class: c.status === "broken" ? "small" : "secondary small" }, "Reconnect") : null;
    if (again) again.addEventListener("click", () => startConnect(c.connector, c.name, again));
    return h("li", { class: "card", "data-credential": c.name },
      h("h3", {}, c.name), h("p", { class: "muted small" }, `${con ? con.title : c.connector} · added ${fmtTime(c.created_at)}`),
      state, h("div", { class: "actions" }, again, test, remove), result);
  })));
}

// "Connect": the host sends the browser to the service's consent page and back here
function startConnect(connector, name, button) {
  busy(button, true, "Connecting…");
  location.assign(`/oauth/${encodeURIComponent(connector)}/start?name=${encodeURIComponent(name)}`);
}

function renderConnect() {
  const offered = Object.values(connectors).filter((c) => c.oauth2);
  $("#connect-section").hidden = !offered.length;
  clear($("#connect-list"), h("ul", { class: "cards" }, offered.map((c) => {
    const id = `connect-name-${c.name}`;
    const input = h("input", { id, maxlength: "100", autocomplete: "off", value: c.name, required: "" });
    const label = c.oauth2.title || `Connect ${c.title}`;
    const off = c.oauth2_configured === false;
    const button = h("button", { type: "button", "data-connect": c.name, disabled: off }, label);
    const problem = h("p", { class: "small form-error", role: "alert", hidden: "" });
    const key = c.name.toUpperCase().replace(/-/g, "_");
    const note = off ? h("p", { class: "small muted" }, "Not set up on this server yet: the operator sets ",
      h("code", {}, `LEVQOR_OAUTH_${key}_CLIENT_ID`), " and ", h("code", {}, `LEVQOR_OAUTH_${key}_CLIENT_SECRET`), ".") : null;
    button.addEventListener("click", () => {
      const name = input.value.trim();
      if (!name) { problem.textContent = "give the credential a name"; problem.hidden = false; return; }
      startConnect(c.name, name, button);
    });
    return h("li", { class: "card", "data-connector": c.name },
      h("h3", {}, c.title), h("div", { class: "field" }, h("label", { for: id }, "Credential name"), input),
      h("div", { class: "actions" }, button), note, problem);
  })));
}

async function load() {
  const { items } = await get("/api/v1/credentials");
  renderList(items);
}

/**
 * The credential schema the manual form offers: a connector with Connect (oauth2) has its
 * connected-account kind made by the Connect button, never pasted, so that kind is left out.
 */
function pasteable(c) {
  const schema = c.credentials;
  const key = schema && Array.isArray(schema.oneOf) ? "oneOf" : schema && Array.isArray(schema.anyOf) ? "anyOf" : null;
  if (!c.oauth2 || !key) return schema;
  const kept = schema[key].filter((alt) => !(alt && alt.properties && alt.properties.auth && alt.properties.auth.const === "oauth2"));
  if (!kept.length || kept.length === schema[key].length) return schema;
  if (kept.length > 1) return { ...schema, [key]: kept };
  const outer = { ...schema };
  delete outer[key];
  const alt = kept[0];
  return {
    ...outer, ...alt, type: "object",
    properties: { ...(outer.properties || {}), ...(alt.properties || {}) },
    required: [...new Set([...(outer.required || []), ...(alt.required || [])])],
  };
}

function renderForm() {
  const c = connectors[$("#cred-connector").value];
  const box = $("#cred-fields");
  clearProblems($("#cred-form"));
  $("#cred-problems").hidden = true;
  form = objectForm(pasteable(c), {}, "/values", { idPrefix: "cv", variantLegend: "Kind of credential", jsonLabel: "Values (JSON, advanced)" });
  clear(box, h("legend", {}, `${c.title} values`), c.docs_url ? h("p", { class: "help" }, "Where to find them: ", h("a", { href: c.docs_url, rel: "noopener noreferrer", target: "_blank" }, c.docs_url)) : null, form.element);
  box.setAttribute("data-pointer", "/values");
}

async function submit(ev) {
  ev.preventDefault();
  const btn = $("#cred-save");
  const name = $("#cred-name").value.trim();
  const problems = [];
  if (!name) problems.push({ pointer: "/name", message: "give the credential a name" });
  for (const p of form.invalid()) problems.push({ pointer: p, message: "not valid JSON" });
  if (problems.length) { showProblems($("#cred-form"), problems); return; }
  busy(btn, true, "Adding…");
  try {
    await post("/api/v1/credentials", { name, connector: $("#cred-connector").value, values: form.value() });
    toast(`Added ${name}: its values are stored encrypted and never shown again`, "ok", 6000);
    $("#cred-name").value = "";
    renderForm(); // the values are gone from the page too
    await load();
  } catch (e) {
    const box = $("#cred-problems");
    if (e instanceof ApiError && e.problems.length) {
      const left = showProblems($("#cred-form"), e.problems);
      clear(box, left.map((p) => h("li", {}, p.message)));
      box.hidden = !left.length;
    } else if (e instanceof ApiError && e.status === 409) {
      showProblems($("#cred-form"), [{ pointer: "/name", message: e.message }]);
    } else {
      clear(box, h("li", {}, errorText(e)));
      box.hidden = false;
    }
  } finally {
    busy(btn, false);
  }
}

async function main() {
  await boot();
  const cat = await get("/api/v1/connectors");
  connectors = Object.fromEntries(cat.connectors.filter((c) => c.credentials).map((c) => [c.name, c]));
  const sel = $("#cred-connector");
  clear(sel, Object.values(connectors).map((c) => h("option", { value: c.name }, c.title)));
  const params = new URLSearchParams(location.search);
  if (params.get("connector") && connectors[params.get("connector")]) sel.value = params.get("connector");
  if (params.get("name")) $("#cred-name").value = params.get("name").slice(0, 100);
  if (params.get("connected")) toast(`Connected ${params.get("connected").slice(0, 100)}: its tokens are stored encrypted`, "ok", 6000);
  renderConnect();
  renderForm();
  sel.addEventListener("change", renderForm);
  $("#cred-form").addEventListener("submit", submit);
  await load();
}

start(main);
