import { api, setToken, ApiError } from "../api.js";
import { boot, start, claimReferral } from "../common.js";
import { $, show, busy, errorText } from "../ui.js";

function nextPath() {
  const n = new URLSearchParams(location.search).get("next") || "/";
  // only a path on this site (never //other.host or a scheme)
  return /^\/(?!\/)/.test(n) && !n.startsWith("/signin") ? n : "/";
}

async function done() {
  await claimReferral();
  location.assign(nextPath());
}

async function main() {
  await boot({ anonymous: true });
  const params = new URLSearchParams(location.search);
  if (params.get("signed_out")) show($("#signin-notice"), "You are signed out.", "ok");
  else if (params.get("next")) show($("#signin-notice"), "Sign in to continue.");

  const form = $("#signin-form");
  const err = $("#signin-error");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    show(err, "");
    if (!form.reportValidity()) return;
    const btn = $("#signin-submit");
    busy(btn, true, "Signing in…");
    try {
      setToken(null);
      await api("POST", "/api/v1/auth/login", {
        email: $("#email").value.trim(),
        password: $("#password").value,
      }, { allow401: true });
      await done();
    } catch (e) {
      show(err, e instanceof ApiError && e.status === 401 ? "Wrong email or password." : errorText(e));
      $("#password").focus();
      busy(btn, false);
    }
  });

  const tform = $("#token-form");
  const terr = $("#token-error");
  tform.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    show(terr, "");
    if (!tform.reportValidity()) return;
    const btn = $("#token-submit");
    busy(btn, true, "Checking…");
    setToken($("#token").value.trim().replace(/^Bearer\s+/i, ""));
    try {
      await api("GET", "/api/v1/me", undefined, { allow401: true });
      await done();
    } catch (e) {
      setToken(null);
      show(terr, errorText(e));
      busy(btn, false);
    }
  });
}

start(main);
