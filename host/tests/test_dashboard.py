"""The dashboard's server side (no browser: tests/browser drives Chromium): every page is an HTML
shell under the strict CSP with nothing inline, its assets are served and exist, and the
schedule preview endpoint the builder uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from e2e_support import LiveServer, make_app
from levqor_host.web.dashboard import PAGES

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends

STATIC = Path(__file__).resolve().parents[1] / "src" / "levqor_host" / "web" / "dashboard" / "static"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = LiveServer(make_app(tmp_path_factory.mktemp("dash"), start_workers=False))
    yield s
    s.stop()


def page_paths(srv) -> list[str]:
    """The host's pages and its plugins' (the billing page of levqor-stripe when installed)."""
    plugin_pages = srv.app.extensions["levqor_dashboard"].plugin_pages
    return [
        rule.replace("<pipeline_id>", "pl_x").replace("<run_id>", "run_x") for _, rule, *_ in PAGES
    ] + [page.path for page in plugin_pages]


def test_every_page_is_a_shell_under_the_strict_csp(srv):
    c = srv.client()
    for path in page_paths(srv):
        r = c.get(path)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"), path
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp, path
        assert r.headers["X-Frame-Options"] == "DENY"
        html = r.text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"inline script on {path}"
        assert not re.search(r"\son[a-z]+\s*=", html), f"inline handler on {path}"
        assert " style=" not in html and "<style" not in html, f"inline style on {path}"
        # no asset from another origin (no CDN)
        for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert ref.startswith(("/", "#")), (path, ref)
        # every same-origin asset exists and is served with its type
        for ref in re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', html):
            a = c.get(ref)
            assert a.status_code == 200, ref
            if ref.endswith(".js"):
                assert "javascript" in a.headers["Content-Type"], ref
        # a support widget and a label for every input on every page
        assert 'id="support-form"' in html
        # a form submitted before the page's script took over never puts its fields (a
        # password, a credential) in a URL, and its buttons wait for the script
        for form in re.findall(r"<form\b[^>]*>", html):
            assert 'method="post"' in form, (path, form)
        for button in re.findall(r'<button[^>]*type="submit"[^>]*>', html):
            if 'id="support-send"' not in button:  # the widget opens only once its script runs
                assert "disabled data-wait-ready" in button, (path, button)
        for input_id in re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', html):
            assert f'for="{input_id}"' in html, (path, input_id)


def test_es_modules_import_only_files_that_exist():
    js = list((STATIC / "js").rglob("*.js"))
    assert len(js) >= 10
    for f in js:
        text = f.read_text()
        for spec in re.findall(r'^import [^;]*? from "([^"]+)";', text, re.M):
            assert spec.startswith("."), (f, spec)  # no bare package, no URL
            assert (f.parent / spec).resolve().exists(), (f, spec)
        assert "innerHTML" not in text and "eval(" not in text and "new Function" not in text, f
    assert (STATIC / "vendor" / "chart.umd.min.js").stat().st_size > 100_000


def test_unknown_static_file_is_a_404(srv):
    r = srv.client().get("/dashboard/static/js/nope.js")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_schedule_preview(srv):
    _, key = srv.user_with_key("sched@example.com")
    c = srv.client(key)
    r = c.get(
        "/api/v1/schedule/preview", params={"cron": "0 9 * * 1-5", "timezone": "Europe/Paris"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["timezone"] == "Europe/Paris" and len(body["next"]) == 5
    assert all(re.search(r"T09:00:00\+0[12]:00$", t) for t in body["next"]), body["next"]
    assert body["next"] == sorted(body["next"])
    assert len(c.get("/api/v1/schedule/preview?cron=@daily&count=3").json()["next"]) == 3

    bad = c.get("/api/v1/schedule/preview", params={"cron": "61 * * * *"})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["problems"][0]["pointer"] == "/trigger/cron"
    bad = c.get("/api/v1/schedule/preview", params={"cron": "* * *"})
    assert bad.status_code == 422 and "5 fields" in bad.json()["error"]["message"]
    bad = c.get("/api/v1/schedule/preview", params={"cron": "* * * * *", "timezone": "Mars/Base"})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["problems"][0]["pointer"] == "/trigger/timezone"
    assert c.get("/api/v1/schedule/preview").status_code == 422
    assert c.get("/api/v1/schedule/preview?cron=@daily&count=0").status_code == 400
    assert c.get("/api/v1/schedule/preview?cron=@daily&count=x").status_code == 400
    assert srv.client().get("/api/v1/schedule/preview?cron=@daily").status_code == 401
