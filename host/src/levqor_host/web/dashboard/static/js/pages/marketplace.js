import { api } from "../api.js";
import { boot, start } from "../common.js";
import { $, h, clear } from "../ui.js";

let all = [];

function text(c) {
  return [c.name, c.title, c.description, c.summary, c.distribution, ...(c.categories || []),
    ...c.actions.map((a) => `${a.name} ${a.title} ${a.description || ""}`),
    ...(c.triggers || []).map((t) => `${t.name} ${t.title} ${t.description || ""} trigger ${t.kind}`),
    c.oauth2 ? "connect oauth" : ""].join(" ").toLowerCase();
}

const fieldList = (fields) => fields.map((f) => f.name + (f.secret ? " (secret)" : "")).join(", ");

function credentials(c) {
  const variants = c.credential_variants || [];
  if (!c.credentials.length && !variants.length) return h("p", { class: "small muted" }, "No credentials needed");
  return h("div", { class: "small credentials" },
    c.credentials.length ? h("p", {}, "Credentials: ", fieldList(c.credentials)) : null,
    variants.length ? h("p", {}, `Credentials, one of ${variants.length}:`) : null,
    variants.length ? h("ul", { class: "variants" }, variants.map((v) => h("li", { "data-variant": v.title },
      h("strong", {}, v.title), v.fields.length ? `: ${fieldList(v.fields)}` : "", v.description ? h("span", { class: "muted" }, ` (${v.description})`) : null))) : null);
}

const KIND = { instant: "instant", polling: "polling" };

function triggers(c) {
  const list = c.triggers || [];
  if (!list.length) return null;
  return h("details", { class: "triggers" }, h("summary", {}, `${list.length} trigger${list.length === 1 ? "" : "s"}`),
    h("ul", {}, list.map((t) => h("li", { "data-trigger": t.name },
      h("strong", {}, t.title), ` (${t.name}) `, h("span", { class: "badge", "data-kind": t.kind }, KIND[t.kind] || t.kind),
      t.description ? ` ${t.description}` : ""))));
}

function connect(c) {
  if (!c.oauth2) return null;
  // the Credentials page offers the connector's Connect button (OAuth2) beside its form
  return h("p", { class: "small connect" }, h("a", { class: "button secondary small", href: `/credentials?connector=${encodeURIComponent(c.name)}` }, c.oauth2.title || "Connect"),
    c.oauth2.scopes && c.oauth2.scopes.length ? h("span", { class: "muted" }, ` scopes: ${c.oauth2.scopes.join(", ")}`) : null);
}

function card(c) {
  const price = c.price ? (c.price.min === c.price.max ? `${c.price.min} credit(s) a step` : `${c.price.min}–${c.price.max} credits a step`) : "";
  return h("article", { class: "card connector", "data-connector": c.name },
    h("h2", {}, c.icon && c.icon.startsWith("data:image/") ? h("img", { src: c.icon, alt: "" }) : null, c.title),
    h("p", { class: "muted small" }, [c.distribution, c.version ? `v${c.version}` : null, c.license].filter(Boolean).join(" · ")),
    h("p", {}, c.description),
    c.categories && c.categories.length ? h("ul", { class: "tags", "aria-label": "Categories" }, c.categories.map((t) => h("li", {}, t))) : null,
    h("details", {}, h("summary", {}, `${c.actions.length} action${c.actions.length === 1 ? "" : "s"}${price ? ` · ${price}` : ""}`),
      h("ul", {}, c.actions.map((a) => h("li", {}, h("strong", {}, a.title), ` (${a.name}, ${a.price} credit${a.price === 1 ? "" : "s"})`, a.description ? ` ${a.description}` : "")))),
    triggers(c),
    credentials(c),
    connect(c),
    c.homepage ? h("p", { class: "small" }, h("a", { href: c.homepage, rel: "noopener noreferrer", target: "_blank" }, "Home page")) : null);
}

function render() {
  const q = $("#search").value.trim().toLowerCase();
  const words = q.split(/\s+/).filter(Boolean);
  const hits = all.filter((c) => words.every((w) => c._text.includes(w)));
  $("#count").textContent = `${hits.length} of ${all.length} connectors`;
  clear($("#market"), hits.length ? hits.map(card) : h("p", { class: "muted" }, "No connector matches."));
}

async function main() {
  // the marketplace is public: it works signed out too
  await boot({ anonymous: true });
  const data = await api("GET", "/api/v1/marketplace", undefined, { allow401: true });
  all = data.connectors.map((c) => ({ ...c, _text: text(c) }));
  const q = new URLSearchParams(location.search).get("q");
  if (q) $("#search").value = q;
  render();
  $("#search").addEventListener("input", render);
}

start(main);
