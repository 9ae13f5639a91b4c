import { get } from "../api.js";
import { boot, start } from "../common.js";
import { $, h, clear, errorText } from "../ui.js";

const charts = {};

function draw(id, type, labels, data, label, color) {
  const Chart = window.Chart;
  if (!Chart) throw new Error("Chart.js did not load (static/vendor/chart.umd.min.js)");
  if (charts[id]) charts[id].destroy();
  charts[id] = new Chart(document.getElementById(id), {
    type,
    data: { labels, datasets: [{ label, data, backgroundColor: color, borderColor: color, fill: false, tension: 0.2 }] },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { display: false } },
      scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
    },
  });
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
    stat("hours saved", Math.round((t.cost_saving_minutes / 60) * 10) / 10), stat("credit balance", out.balance));
  draw("chart-runs", "bar", labels, s.map((d) => d.jobs), "runs", "#3b5bdb");
  draw("chart-steps", "bar", labels, s.map((d) => d.steps), "steps", "#1098ad");
  draw("chart-credits", "line", labels, s.map((d) => d.credits), "credits", "#e8590c");
  draw("chart-saving", "line", labels, s.map((d) => d.cost_saving_minutes), "minutes saved", "#2b8a3e");
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
  try { await load(sel.value); } catch (e) { clear($("#totals"), h("p", { class: "notice bad" }, errorText(e))); throw e; }
  sel.addEventListener("change", () => load(sel.value));
}

start(main);
