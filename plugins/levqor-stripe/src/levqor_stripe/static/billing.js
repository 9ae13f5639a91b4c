import { get, post, ApiError } from "/dashboard/static/js/api.js";
import { boot, start } from "/dashboard/static/js/common.js";
import { $, h, clear, busy, errorText, toast, show } from "/dashboard/static/js/ui.js";

function offState(title, text) {
  return h("section", { class: "card", id: "billing-off", "data-billing": "off" },
    h("h2", {}, title), h("p", {}, text),
    h("p", { class: "muted small" }, "Runs are not limited by a plan or credits on this host."));
}

async function checkout(button, what) {
  busy(button, true, "Opening Stripe…");
  try {
    const back = `${location.origin}/billing`;
    const out = await post("/api/v1/billing/checkout", { ...what, success_url: `${back}?checkout=success`, cancel_url: `${back}?checkout=cancelled` });
    location.assign(out.url); // Stripe Checkout
  } catch (e) {
    toast(errorText(e), "bad", 10000);
    busy(button, false);
  }
}

async function main() {
  await boot();
  const checkoutState = new URLSearchParams(location.search).get("checkout");
  if (checkoutState === "success") show($("#checkout-notice"), "Payment received: your plan and credits update as soon as Stripe confirms it (usually seconds).", "ok");
  else if (checkoutState === "cancelled") show($("#checkout-notice"), "Checkout cancelled: nothing was charged.", "warn");
  const box = $("#billing");
  let b;
  try {
    b = await get("/api/v1/billing");
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      clear(box, offState("Billing is off", "This host has no billing plugin (install levqor-stripe to sell plans and credits)."));
      return;
    }
    throw e;
  }
  if (b.billing === "unlimited") {
    clear(box, offState("Billing is off", "This is a self-hosted Levqor without billing (LEVQOR_BILLING=unlimited, or no STRIPE_SECRET_KEY): every run is allowed and nothing is charged."));
    return;
  }
  const stripeOn = b.stripe.configured;
  const summary = h("section", { class: "card", "data-billing": b.billing },
    h("h2", {}, "Your plan"),
    h("dl", { class: "facts" },
      h("dt", {}, "Plan"), h("dd", { id: "plan-name" }, b.plan.title),
      h("dt", {}, "Credit balance"), h("dd", { id: "balance" }, String(b.balance)),
      h("dt", {}, "Runs today"), h("dd", {}, b.plan.runs_per_day === null ? String(b.runs_today) : `${b.runs_today} of ${b.plan.runs_per_day}`),
      b.subscription_status ? [h("dt", {}, "Subscription"), h("dd", {}, b.subscription_status)] : null),
    !stripeOn ? h("p", { class: "notice warn" }, `Buying is off on this host: ${b.stripe.missing}`) : null);
  const portal = h("button", { type: "button", class: "secondary", id: "portal", disabled: !stripeOn || !b.has_customer }, "Manage billing (Stripe portal)");
  portal.addEventListener("click", async () => {
    busy(portal, true, "Opening…");
    try { const out = await post("/api/v1/billing/portal", { return_url: `${location.origin}/billing` }); location.assign(out.url); }
    catch (e) { toast(errorText(e), "bad", 10000); busy(portal, false); }
  });
  summary.append(h("div", { class: "actions" }, portal, !b.has_customer ? h("span", { class: "muted small" }, "The portal opens after your first purchase.") : null));

  const plans = h("section", { class: "card" }, h("h2", {}, "Plans"), h("div", { class: "plans" }, b.plans.map((p) => {
    const current = p.name === b.plan.name;
    const btn = current || p.purchasable
      ? h("button", { type: "button", "data-plan": p.name, disabled: current || !stripeOn }, current ? "Your plan" : `Switch to ${p.title}`)
      : null;
    if (btn && !current) btn.addEventListener("click", () => checkout(btn, { plan: p.name }));
    return h("div", { class: `plan${current ? " current" : ""}` },
      h("h3", {}, p.title),
      h("p", {}, p.runs_per_day === null ? "Unlimited runs" : `${p.runs_per_day} run${p.runs_per_day === 1 ? "" : "s"} a day`),
      h("p", { class: "muted small" }, `${p.monthly_credits} credits a month${p.included_runs_per_day ? ` · ${p.included_runs_per_day} included run(s) a day` : ""}`),
      btn, !p.purchasable && !current ? h("p", { class: "muted small" }, "not sold on this host") : null);
  })));
  const packs = b.packs.length ? h("section", { class: "card" }, h("h2", {}, "Credit packs"), h("div", { class: "plans" }, b.packs.map((p) => {
    const btn = h("button", { type: "button", class: "secondary", "data-pack": p.name, disabled: !stripeOn }, `Buy ${p.credits} credits`);
    btn.addEventListener("click", () => checkout(btn, { pack: p.name }));
    return h("div", { class: "plan" }, h("h3", {}, p.name), btn);
  }))) : null;
  clear(box, summary, plans, packs);
}

start(main);
