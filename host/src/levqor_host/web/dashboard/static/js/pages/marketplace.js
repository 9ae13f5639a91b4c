import { api } from "../api.js";
import { boot, start } from "../common.js";
import { $, h, clear } from "../ui.js";

let all = [];

function text(c) {
  return [c.name, c.title, c.description, c.summary, c.distribution, ...(c.categories || []),
    ...c.actions.map((a) => `${a.name} ${a.title} ${a.description || ""}`)].join(" ").toLowerCase();
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

function card(c) {
  const price = c.price ? (c.price.min === c.price.max ? `${c.price.min} credit(s) a step` : `${c.price.min}–${c.price.max} credits a step`) : "";
  return h("article", { class: "card connector", "data-connector": c.name },
    h("h2", {}, c.icon && c.icon.startsWith("data:image/") ? h("img", { src: c.icon, alt: "" }) : null, c.title),
    h("p", { class: "muted small" }, [c.distribution, c.version ? `v${c.version}` : null, c.license].filter(Boolean).join(" · ")),
    h("p", {}, c.description),
    c.categories && c.categories.length ? h("ul", { class: "tags", "aria-label": "Categories" }, c.categories.map((t) => h("li", {}, t))) : null,
    h("details", {}, h("summary", {}, `${c.actions.length} action${c.actions.length === 1 ? "" : "s"}${price ? ` · ${price}` : ""}`),
      h("ul", {}, c.actions.map((a) => h("li", {}, h("strong", {}, a.title), ` (${a.name}, ${a.price} credit${a.price === 1 ? "" : "s"})`, a.description ? ` ${a.description}` : "")))),
    credentials(c),
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
