/* The dashboard's global error handler: uncaught script errors and unhandled promise rejections
   go to POST /api/v1/errors (logs/errors.jsonl on the host, and Sentry when it is configured).
   A classic script loaded before every module, so it is in place even when a module fails. */
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="levqor-release"]');
  var release = meta ? meta.getAttribute("content") : "";
  var sent = 0;
  var MAX = 5; // per page load: a loop that throws must not flood the inbox
  function clip(v, n) { v = v == null ? "" : String(v); return v.length > n ? v.slice(0, n) : v; }
  function report(message, stack) {
    if (sent >= MAX) return;
    sent += 1;
    var body = {
      message: clip(message || "script error", 2000) || "script error",
      stack: clip(stack, 16000),
      url: clip(location.href, 2000),
      user_agent: clip(navigator.userAgent, 512),
      release: clip(release, 100)
    };
    try {
      fetch("/api/v1/errors", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin",
        keepalive: true
      }).catch(function () {});
    } catch (e) { /* reporting must never throw */ }
  }
  // an API answer the page did not handle is the server's story (it logs its own 5xx), and a
  // 401 is a redirect to sign-in: neither is a script error
  function expected(err) {
    return err && err.name === "ApiError" && (err.status === 401 || err.status === 0 || err.status < 500);
  }
  window.addEventListener("error", function (ev) {
    if (expected(ev.error)) return;
    var stack = ev.error && ev.error.stack ? ev.error.stack : (ev.filename || "") + ":" + (ev.lineno || 0) + ":" + (ev.colno || 0);
    report(ev.message || (ev.error && ev.error.message), stack);
  });
  window.addEventListener("unhandledrejection", function (ev) {
    var r = ev.reason;
    if (expected(r)) return;
    var msg = r && r.message ? r.message : String(r);
    report("Unhandled promise rejection: " + msg, r && r.stack ? r.stack : "");
  });
  window.levqorReportError = report;
})();
