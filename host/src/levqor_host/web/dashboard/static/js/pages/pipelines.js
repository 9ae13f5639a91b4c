import { get, post, qs } from "../api.js";
import { boot, start } from "../common.js";
import { $, h, clear, badge, fmtTime, show, toast, errorText } from "../ui.js";
import { triggerState } from "../flow/apptrigger.js";

const TRIGGERS = { manual: "manual", webhook: "webhook", schedule: "schedule", app: "app event" };

/** The on/off switch of pipeline `p` and its trigger's state beside it. */
function stateCell(p) {
  const id = `on-${p.id}`;
  const box = h("input", { type: "checkbox", id, role: "switch", checked: !!p.enabled });
  const status = h("span", { class: "small trigger-status", role: "status" });
  const paint = (q) => {
    const st = triggerState(q, fmtTime);
    status.textContent = st.text;
    status.dataset.state = st.state;
    status.classList.toggle("trigger-failing", st.state === "failing" || st.state === "paused");
  };
  paint(p);
  box.addEventListener("change", async () => {
    const on = box.checked;
    box.disabled = true;
    try {
      const q = await post(`/api/v1/pipelines/${encodeURIComponent(p.id)}/${on ? "enable" : "disable"}`, {});
      Object.assign(p, { enabled: q.enabled, trigger_status: q.trigger_status });
      paint(p);
    } catch (e) {
      box.checked = !on;
      toast(errorText(e), "bad", 8000);
    } finally {
      box.disabled = false;
    }
  });
  return h("div", { class: "trigger-state" },
    h("label", { class: "switch", for: id }, box, h("span", { class: "visually-hidden" }, `${p.name} on`)), status);
}

async function lastRun(p) {
  try {
    const out = await get("/api/v1/runs" + qs({ pipeline_id: p.id, limit: 1 }));
    return out.items[0] || null;
  } catch {
    return null;
  }
}

async function main() {
  await boot();
  const checkout = new URLSearchParams(location.search).get("checkout");
  if (checkout === "success") show($("#checkout-notice"), "Payment received: your plan and credits update as soon as Stripe confirms it.", "ok");
  else if (checkout === "cancelled") show($("#checkout-notice"), "Checkout cancelled: nothing was charged.", "warn");
  else if (new URLSearchParams(location.search).get("archived")) show($("#checkout-notice"), "Pipeline archived: its webhook and schedule no longer start runs.", "ok");

  const box = $("#pipelines");
  const { items } = await get("/api/v1/pipelines");
  if (!items.length) {
    clear(box, h("div", { class: "card" },
      h("p", {}, "No pipeline yet."),
      h("p", {}, h("a", { href: "/pipelines/new" }, "Describe one in plain words"), " and the AI builder drafts it, or build it step by step.")));
    return;
  }
  const runs = await Promise.all(items.map(lastRun));
  const rows = items.map((p, i) => {
    const r = runs[i];
    return h("tr", { "data-pipeline": p.id },
      h("td", { "data-label": "Name" }, h("a", { href: `/pipelines/${encodeURIComponent(p.id)}` }, p.name)),
      h("td", { "data-label": "Trigger" }, TRIGGERS[p.trigger] || p.trigger || "—"),
      h("td", { "data-label": "On", class: "state" }, stateCell(p)),
      h("td", { "data-label": "Version" }, String(p.version)),
      h("td", { "data-label": "Last run", class: "last-run" },
        r ? h("a", { href: `/runs/${encodeURIComponent(r.id)}` }, badge(r.status), " ", h("span", { class: "muted small" }, fmtTime(r.created_at)))
          : h("span", { class: "muted" }, "never run")),
      h("td", { "data-label": "Updated" }, fmtTime(p.updated_at)));
  });
  clear(box, h("div", { class: "table-wrap" },
    h("table", { class: "responsive", id: "pipelines-table" },
      h("caption", { class: "visually-hidden" }, "Your pipelines"),
      h("thead", {}, h("tr", {}, ["Name", "Trigger", "On", "Version", "Last run", "Updated"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))));
}

start(main);
