import { get } from "../api.js";
import { boot, start } from "../common.js";
import { $, h, clear, copyButton, nextId } from "../ui.js";

async function main() {
  await boot();
  const r = await get("/api/v1/referrals");
  const url = new URL(r.link);
  url.searchParams.set("utm_source", "referral");
  url.searchParams.set("utm_medium", "dashboard");
  url.searchParams.set("utm_campaign", "invite");
  const link = url.toString();
  const id = nextId("ref");
  const input = h("input", { id, readonly: true, class: "mono", value: link });
  input.addEventListener("focus", () => input.select());
  const earned = r.rewarded * r.bonus;
  clear($("#referrals"),
    h("section", { class: "card" },
      h("h2", {}, "Your referral link"),
      h("p", {}, `When someone signs up through it and their first run succeeds, you both get ${r.bonus} credits.`),
      h("div", { class: "field" }, h("label", { for: id }, "Link"), h("div", { class: "inline" }, input, copyButton(() => link, "Copy link"))),
      h("p", { class: "muted small" }, "Your code: ", h("code", {}, r.code))),
    h("section", { class: "card" },
      h("h2", {}, "Your referrals"),
      h("dl", { class: "facts" },
        h("dt", {}, "People referred"), h("dd", { id: "referred" }, String(r.referred_users)),
        h("dt", {}, "Rewarded (first run succeeded)"), h("dd", {}, String(r.rewarded)),
        h("dt", {}, "Credits earned"), h("dd", { id: "earned" }, `${earned}`, h("span", { class: "muted small" }, ` (${r.bonus} per rewarded referral)`)),
        r.referred_by_code ? [h("dt", {}, "You were referred by"), h("dd", {}, h("code", {}, r.referred_by_code))] : null)));
}

start(main);
