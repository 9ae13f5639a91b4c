import { get } from "../api.js";
import { boot, start } from "../common.js";
import { $, h, clear, errorText } from "../ui.js";

const charts = {};

/** A chart of one series ([label, data, color] pairs for several, stacked). */
function draw(id, type, labels, data, label, color) {
  const Chart = window.Chart;
  if (!Chart) throw new Error("Chart.js did not load (static/vendor/chart.umd.min.js)");
  if (charts[id]) charts[id].destroy();
  const series = Array.isArray(label) ? label : [[label, data, color]];
  const stacked = series.length > 1;
  charts[id] = new Chart(document.getElementById(id), {
    type,
    data: { labels, datasets: series.map(([l, d, c]) => ({ label: l, data: d, backgroundColor: c, borderColor: c, fill: false, tension: 0.2 })) },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { display: stacked } },
      scales: { x: { stacked }, y: { stacked, beginAtZero: true, ticks: { precision: 0 } } },
    },
  });
  document.getElementById(id).dataset.total = String(series.reduce((a, [, d]) => a + d.reduce((x, y) => x + (y || 0), 0), 0));
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("b", {}, String(value)), h("span", { class: "muted small" }, label));
}

function pct(x) { return x === null || x === undefined ? "—" : `${Math.round(x * 1000) / 10}%`; }

async function load(days) {
  const out = await get(`/api/v1/analytics/dashboard?days=${days}`);
  const s = out.usage.series;
  const labels = s.map((d) => d.day.slice(5));
  const t = out.usage.totals;
  clear($("#totals"),
    stat(`runs in ${days} days`, t.jobs), stat("steps", t.steps), stat("credits used", t.credits),
    stat("hours saved", Math.round((t.cost_saving_minutes / 60) * 10) / 10), stat("credit balance", out.balance),
    h("div", { class: "stat", id: "stat-tokens", "data-tokens": String(t.tokens ?? 0) }, h("b", {}, Number(t.tokens ?? 0).toLocaleString("en")),
      h("span", { class: "muted small" }, `model tokens (${Number(t.input_tokens ?? 0).toLocaleString("en")} in, ${Number(t.output_tokens ?? 0).toLocaleString("en")} out)`)));
  draw("chart-runs", "bar", labels, s.map((d) => d.jobs), "runs", "#3b5bdb");
  draw("chart-steps", "bar", labels, s.map((d) => d.steps), "steps", "#1098ad");
  draw("chart-credits", "line", labels, s.map((d) => d.credits), "credits", "#e8590c");
  draw("chart-saving", "line", labels, s.map((d) => d.cost_saving_minutes), "minutes saved", "#2b8a3e");
  draw("chart-tokens", "bar", labels, null, [
    ["input tokens", s.map((d) => d.input_tokens || 0), "#5c7cfa"],
    ["output tokens", s.map((d) => d.output_tokens || 0), "#f08c00"],
  ]);
  const admin = out.admin;
  $("#admin").hidden = !admin;
  if (admin) {
    const names = { signed_up: "Signed up", created_pipeline: "Created a pipeline", ran_pipeline: "Ran a pipeline", paid: "Paid" };
    draw("chart-funnel", "bar", admin.funnel.map((f) => names[f.step] || f.step), admin.funnel.map((f) => f.users), "users", "#7048e8");
    clear($("#funnel-table tbody"), admin.funnel.map((f) => h("tr", {},
      h("th", { scope: "row" }, names[f.step] || f.step), h("td", {}, String(f.users)), h("td", {}, pct(f.rate_from_previous)), h("td", {}, pct(f.rate_from_signup)))));
    const money = Object.entries(admin.revenue.amount_by_currency || {}).map(([c, a]) => `${(a / 100).toFixed(2)} ${c.toUpperCase()}`).join(", ") || "—";
    clear($("#admin-facts"),
      h("dt", {}, "Active users"), h("dd", {}, `${admin.active_users.day} today · ${admin.active_users.week} this week · ${admin.active_users.month} this month`),
      h("dt", {}, "Revenue"), h("dd", {}, `${money} (${admin.revenue.events} payments)`),
      h("dt", {}, "Credits sold"), h("dd", {}, String(admin.revenue.credits_sold)));
  }
}

async function main() {
  await boot();
  const sel = $("#days");
  document.body.dataset.usage = "loading";
  try { await load(sel.value); } catch (e) { clear($("#totals"), h("p", { class: "notice bad" }, errorText(e))); throw e; }
  document.body.dataset.usage = "ready";
  sel.addEventListener("change", () => load(sel.value));
}

start(main);
