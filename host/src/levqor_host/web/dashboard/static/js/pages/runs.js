import { get, qs } from "../api.js";
import { boot, start } from "../common.js";
import { $, h, clear, badge, fmtTime, fmtDuration, poll } from "../ui.js";

let names = {};
let extra = [];
let cursor = null;

function row(r) {
  return h("tr", { "data-run": r.id },
    h("td", { "data-label": "Run" }, h("a", { href: `/runs/${encodeURIComponent(r.id)}`, class: "mono" }, r.id)),
    h("td", { "data-label": "Pipeline" }, names[r.pipeline_id]
      ? h("a", { href: `/pipelines/${encodeURIComponent(r.pipeline_id)}` }, names[r.pipeline_id], ` v${r.version}`)
      : h("span", { class: "mono" }, r.pipeline_id)),
    h("td", { "data-label": "Status" }, badge(r.status)),
    h("td", { "data-label": "Trigger" }, r.trigger || "—"),
    h("td", { "data-label": "Started" }, fmtTime(r.created_at)),
    h("td", { "data-label": "Took" }, r.started_at ? fmtDuration(r.started_at, r.finished_at) : "—"),
    h("td", { "data-label": "Tokens", class: "usage-tokens", title: r.usage ? `${r.usage.input_tokens} in + ${r.usage.output_tokens} out` : null },
      r.usage && r.usage.total_tokens ? Number(r.usage.total_tokens).toLocaleString("en") : "—"));
}

function render(items) {
  const box = $("#runs");
  if (!items.length) {
    clear(box, h("p", { class: "muted" }, "No runs yet. Open a pipeline and press Run now."));
    return;
  }
  clear(box, h("div", { class: "table-wrap" },
    h("table", { class: "responsive", id: "runs-table" },
      h("caption", { class: "visually-hidden" }, "Runs, newest first"),
      h("thead", {}, h("tr", {}, ["Run", "Pipeline", "Status", "Trigger", "Started", "Took", "Tokens"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, items.map(row)))));
}

async function main() {
  await boot();
  const { items } = await get("/api/v1/pipelines?archived=true");
  names = Object.fromEntries(items.map((p) => [p.id, p.name]));
  const filter = $("#status-filter");
  const more = $("#more");
  let first = [];
  const load = async () => {
    const out = await get("/api/v1/runs" + qs({ limit: 50, status: filter.value }));
    first = out.items;
    if (!extra.length) cursor = out.next_cursor;
    more.hidden = !cursor;
    const seen = new Set(first.map((r) => r.id));
    render([...first, ...extra.filter((r) => !seen.has(r.id))]);
  };
  let poller = poll(load, 2500);
  filter.addEventListener("change", () => {
    extra = [];
    poller.stop();
    poller = poll(load, 2500);
  });
  more.addEventListener("click", async () => {
    const out = await get("/api/v1/runs" + qs({ limit: 50, status: filter.value, cursor }));
    extra = [...extra, ...out.items];
    cursor = out.next_cursor;
    more.hidden = !cursor;
    const seen = new Set(first.map((r) => r.id));
    render([...first, ...extra.filter((r) => !seen.has(r.id))]);
  });
}

start(main);
