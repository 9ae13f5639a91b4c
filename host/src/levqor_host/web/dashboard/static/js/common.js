// Every page: the navigation, sign-out, the support widget, and who is signed in.
import { api, get, post, setToken, getToken, cookie, leavePage, ApiError } from "./api.js";
import { $, show, toast, busy, errorText } from "./ui.js";

const REF_KEY = "levqor_ref";
const UTM = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"];

let mePromise = null;

/** The signed-in user (GET /api/v1/me); a 401 goes to the sign-in page. */
export function me() {
  if (!mePromise) mePromise = get("/api/v1/me");
  return mePromise;
}

function rememberReferral() {
  const p = new URLSearchParams(location.search);
  const code = p.get("ref");
  if (!code) return;
  const data = { code: code.slice(0, 32) };
  for (const k of UTM) if (p.get(k)) data[k] = p.get(k).slice(0, 200);
  try { localStorage.setItem(REF_KEY, JSON.stringify(data)); } catch { /* ignore */ }
}

/** After sign-in: name the code that referred this browser (a 4xx such as "too late" is fine). */
export async function claimReferral() {
  let data = null;
  try { data = JSON.parse(localStorage.getItem(REF_KEY) || "null"); } catch { data = null; }
  if (!data || !data.code) return null;
  try {
    const out = await post("/api/v1/referrals/claim", data);
    return out;
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    return null;
  } finally {
    try { localStorage.removeItem(REF_KEY); } catch { /* ignore */ }
  }
}

function wireNav() {
  const toggle = $(".menu-toggle");
  const nav = $("#nav");
  if (toggle && nav) {
    toggle.addEventListener("click", () => {
      const open = nav.classList.toggle("open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }
  const out = $("#signout");
  if (out) {
    out.addEventListener("click", async () => {
      busy(out, true);
      leavePage();  // a poll answered 401 after the sign-out must not redirect elsewhere
      if (getToken()) {
        setToken(null);
      } else {
        try { await api("POST", "/api/v1/auth/logout", undefined, { allow401: true }); }
        catch (e) { if (!(e instanceof ApiError)) throw e; }
      }
      location.assign("/signin?signed_out=1");
    });
  }
}

function wireSupport() {
  const toggle = $("#support-toggle");
  const panel = $("#support-panel");
  const form = $("#support-form");
  if (!toggle || !panel || !form) return;
  const err = $("#support-error");
  const done = $("#support-done");
  const open = (yes) => {
    panel.hidden = !yes;
    toggle.setAttribute("aria-expanded", yes ? "true" : "false");
    if (yes) {
      form.hidden = false;
      done.hidden = true;
      const email = $("#support-email");
      (email.value ? $("#support-subject") : email).focus();
    } else {
      toggle.focus();
    }
  };
  toggle.addEventListener("click", () => open(panel.hidden));
  $("#support-close").addEventListener("click", () => open(false));
  panel.addEventListener("keydown", (ev) => { if (ev.key === "Escape") open(false); });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    show(err, "");
    if (!form.reportValidity()) return;
    const send = $("#support-send");
    busy(send, true, "Sending…");
    try {
      const out = await api("POST", "/api/v1/support", {
        email: $("#support-email").value.trim(),
        subject: $("#support-subject").value.trim(),
        message: $("#support-message").value.trim(),
      }, { allow401: true });
      form.hidden = true;
      $("#support-subject").value = "";
      $("#support-message").value = "";
      show(done, `Thanks, we got your message${out && out.id ? ` (reference ${out.id})` : ""}. We answer by email.`);
    } catch (e) {
      show(err, errorText(e));
    } finally {
      busy(send, false);
    }
  });
}

/**
 * Start a page: wires the shared parts; unless `anonymous`, resolves to the signed-in user
 * (or leaves for the sign-in page).
 */
export async function boot({ anonymous = false } = {}) {
  rememberReferral();
  wireNav();
  wireSupport();
  let user = null;
  if (anonymous) {
    // a public page: show who is signed in when someone is (the readable CSRF cookie says so)
    if (!cookie("levqor_csrf") && !getToken()) return null;
    try { user = await api("GET", "/api/v1/me", undefined, { allow401: true }); } catch { return null; }
  } else {
    user = await me();
    // a `?ref=` code remembered before this browser's first sign-in (a login link lands here, not
    // on the sign-in page): claim it now, in the background
    claimReferral().catch(() => {});
  }
  const who = $("#who-email");
  if (who) who.textContent = user.email;
  const email = $("#support-email");
  if (email && !email.value) email.value = user.email;
  return user;
}

/**
 * Run a page's main(): an error it did not handle becomes a message on the page; a script
 * error (not an API answer) is also reported to /api/v1/errors by the global handler.
 * Buttons marked `data-wait-ready` (`disabled` in the template) are enabled once main() has
 * attached its handlers: a click before that would submit the form natively.
 */
export function start(main) {
  main().then(() => {
    for (const el of document.querySelectorAll("[data-wait-ready]")) el.disabled = false;
  }).catch((e) => {
    toast(errorText(e), "bad", 10000);
    if (!(e instanceof ApiError) && window.levqorReportError) {
      window.levqorReportError(e && e.message ? e.message : String(e), e && e.stack ? e.stack : "");
    }
  });
}

export { toast };
