"""The marketplace: GET /api/v1/marketplace and `levqor marketplace build`, generated from plugins.

Installed distributions are laid out for real (dist-info with METADATA and entry_points.txt plus
the module) in a folder on PYTHONPATH / sys.path, as pip would leave them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from e2e_support import LiveServer, make_app
from levqor_host.marketplace import build_site, listing
from levqor_kernel import hookimpl
from levqor_kernel.plugins import make_plugin_manager

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends

PLANTED = "planted-default-SECRET-7a6b5c"

GOOD_SRC = """
from levqor_kernel import hookimpl

@hookimpl
def describe_schema():
    return [{
        "name": "mkgood",
        "title": "Good <b>Things</b>",
        "description": "Makes good things & more.",
        "icon": "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E",
        "categories": ["productivity", "test"],
        "kernel": ">=0.1,<1",
        "credentials": {
            "type": "object", "required": ["token"],
            "properties": {
                "token": {"type": "string", "writeOnly": True, "title": "Token",
                          "description": "Your API token", "default": "PLANTED",
                          "examples": ["PLANTED"]},
                "api_base": {"type": "string", "description": "Self-hosted only"},
            },
        },
        "actions": {
            "make": {"title": "Make", "description": "Makes one",
                     "payload": {"type": "object", "properties": {"n": {"type": "integer"}}},
                     "output": {"type": "object", "properties": {"id": {"type": "string"}}},
                     "example": {"n": 1}, "price": 3},
            "peek": {"title": "Peek", "payload": {"type": "object"}, "output": {"type": "object"},
                     "example": {}, "price": 1},
        },
    }]

@hookimpl
def run_task(connector, action, payload, credentials, context):
    return {"id": "x"}
""".replace("PLANTED", PLANTED)

BROKEN_SRC = """
from levqor_kernel import hookimpl

@hookimpl
def describe_schema():
    return [{"name": "mkbroken", "title": "Broken", "description": "d",
             "actions": {"a": {"title": "A", "payload": {"type": "objekt"}, "output": {},
                               "example": {}}}}]
"""

FUTURE_SRC = """
from levqor_kernel import hookimpl

@hookimpl
def describe_schema():
    return [{"name": "mkfuture", "title": "Future", "description": "d", "kernel": ">=9,<10",
             "actions": {"a": {"title": "A", "payload": {"type": "object"}, "output": {"type": "object"},
                               "example": {}}}}]
"""


def write_dist(
    root: Path, dist: str, ep: str, module: str, source: str, extra_meta: str = ""
) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\nSummary: {dist} summary\n{extra_meta}"
    )
    (info / "entry_points.txt").write_text(f"[levqor]\n{ep} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    write_dist(
        root,
        "levqor-mkgood",
        "mkgood",
        "lvqmk_good",
        GOOD_SRC,
        "Author-email: Ada Author <ada@example.org>\nLicense-Expression: MIT\n"
        "Project-URL: Homepage, https://example.org/mkgood\nProject-URL: Issues, https://example.org/i\n",
    )
    write_dist(root, "levqor-mkbroken", "mkbroken", "lvqmk_broken", BROKEN_SRC)
    write_dist(root, "levqor-mkfuture", "mkfuture", "lvqmk_future", FUTURE_SRC)
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.startswith("lvqmk_")]:
        del sys.modules[name]


def levqor(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_") and k != "DATABASE_URL"
    }
    env.update({"PYTHONPATH": str(site), "LEVQOR_CACHE_DIR": ""})
    return subprocess.run(
        [sys.executable, "-m", "levqor_host.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_api_lists_installed_connectors_with_package_metadata_publicly(tmp_path, site):
    srv = LiveServer(make_app(tmp_path, start_workers=False))
    try:
        r = srv.client().get("/api/v1/marketplace")  # no API key: a public listing
        assert r.status_code == 200, r.text
        data = r.json()
    finally:
        srv.stop()
    names = [c["name"] for c in data["connectors"]]
    assert "mkgood" in names and "core" in names and names == sorted(names)
    assert "mkbroken" not in names and "mkfuture" not in names
    assert data["failures"] == 2  # how many; `levqor plugins` says which and why
    good = next(c for c in data["connectors"] if c["name"] == "mkgood")
    assert {
        k: good[k] for k in ("distribution", "version", "summary", "author", "license", "homepage")
    } == {
        "distribution": "levqor-mkgood",
        "version": "1.2.3",
        "summary": "levqor-mkgood summary",
        "author": "Ada Author",  # names only, never an address
        "license": "MIT",
        "homepage": "https://example.org/mkgood",
    }
    assert good["icon"].startswith("data:image/svg+xml")
    assert good["categories"] == ["productivity", "test"]
    assert good["kernel"] == ">=0.1,<1"
    assert good["price"] == {"min": 1, "max": 3}
    make = next(a for a in good["actions"] if a["name"] == "make")
    assert make["price"] == 3 and make["payload"]["properties"]["n"] == {"type": "integer"}
    assert make["output"]["properties"]["id"] == {"type": "string"}
    assert good["credentials"] == [
        {
            "name": "token",
            "title": "Token",
            "description": "Your API token",
            "required": True,
            "secret": True,
        },
        {
            "name": "api_base",
            "title": "api_base",
            "description": "Self-hosted only",
            "required": False,
            "secret": False,
        },
    ]
    assert PLANTED not in r.text and "ada@example.org" not in r.text
    assert str(site) not in r.text  # failure details (local paths) stay off the public listing


def test_marketplace_is_documented_in_openapi_as_public(tmp_path):
    srv = LiveServer(make_app(tmp_path, start_workers=False))
    try:
        spec = srv.client().get("/api/v1/openapi.json").json()
        data = srv.client().get("/api/v1/marketplace").json()
    finally:
        srv.stop()
    op = spec["paths"]["/api/v1/marketplace"]["get"]
    assert op["security"] == []
    from jsonschema import Draft202012Validator

    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert not list(Draft202012Validator(schema).iter_errors(data))


def test_plugins_shows_why_and_the_static_site_leaves_broken_plugins_out(tmp_path, site):
    r = levqor(site, "plugins", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    failures = {f["name"]: f for f in out["failures"]}
    assert failures["mkbroken"]["distribution"] == "levqor-mkbroken"
    assert "invalid describe_schema" in failures["mkbroken"]["error"]
    assert "payload schema is not a valid JSON Schema" in failures["mkbroken"]["error"]
    # versioning: the host refuses a connector built for another kernel, naming both versions
    from levqor_kernel import __version__

    assert (
        f"mkfuture: requires levqor-kernel >=9,<10, but levqor-kernel {__version__} is installed"
        in failures["mkfuture"]["error"]
    )
    assert "mkgood" in {p["name"] for p in out["plugins"]}
    text = levqor(site, "plugins").stdout
    assert "FAILED mkbroken (levqor-mkbroken): invalid describe_schema" in text
    assert "FAILED mkfuture (levqor-mkfuture)" in text and "requires levqor-kernel >=9,<10" in text

    dest = tmp_path / "market"
    r = levqor(site, "marketplace", "build", str(dest))
    assert r.returncode == 0, r.stderr
    assert "skipped mkbroken (levqor-mkbroken)" in r.stderr and "skipped mkfuture" in r.stderr
    index = json.loads((dest / "index.json").read_text())
    names = {c["name"] for c in index["connectors"]}
    assert "mkgood" in names and not names & {"mkbroken", "mkfuture"}
    pages = {p.name for p in (dest / "connectors").iterdir()}
    assert "mkgood.html" in pages and "mkbroken.html" not in pages and "mkfuture.html" not in pages
    assert (dest / "assets" / "search.js").is_file() and (dest / "assets" / "style.css").is_file()
    page = (dest / "connectors" / "mkgood.html").read_text()
    assert "pip install levqor-mkgood" in page and "Ada Author" in page and "MIT" in page
    assert 'href="https://example.org/mkgood"' in page
    assert PLANTED not in page and PLANTED not in (dest / "index.json").read_text()
    # LEVQOR_PLUGINS chooses the set, as for the server
    only = tmp_path / "only"
    env_r = subprocess.run(
        [sys.executable, "-m", "levqor_host.cli", "marketplace", "build", str(only)],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")},
            "PYTHONPATH": str(site),
            "LEVQOR_CACHE_DIR": "",
            "LEVQOR_PLUGINS": "mkgood",
            "LEVQOR_DISABLE_PLUGINS": "core",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert env_r.returncode == 0, env_r.stderr
    assert [c["name"] for c in json.loads((only / "index.json").read_text())["connectors"]] == [
        "mkgood"
    ]


class Hostile:
    """Markup and script in every text a plugin controls."""

    @hookimpl
    def describe_schema(self):
        x = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
        return [
            {
                "name": "hostile",
                "title": "T" + x,
                "description": "D" + x,
                "icon": "https://evil.example/track.png",
                "categories": ["spam"],
                "credentials": {
                    "type": "object",
                    "properties": {"k": {"type": "string", "description": x}},
                },
                "actions": {
                    "a": {
                        "title": "A" + x,
                        "description": x,
                        "payload": {"type": "object", "description": x},
                        "output": {"type": "object"},
                        "example": {},
                    }
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {}


def test_static_site_escapes_everything_and_needs_no_inline_script_or_external_asset(tmp_path):
    pm = make_plugin_manager(entry_points=False, plugins=[("hostile", Hostile())])
    files = build_site(listing(pm), tmp_path / "site")
    htmls = [f for f in files if f.suffix == ".html"]
    assert {f.name for f in htmls} == {"index.html", "core.html", "hostile.html"}
    for f in htmls:
        text = f.read_text()
        assert "<script>" not in text and "onerror=alert" not in text.replace(
            "onerror=alert(2)&gt;", ""
        )
        assert "<img src=x" not in text
        assert "evil.example" not in text  # a non-data: icon is dropped
        assert not re.search(r"\sstyle=", text) and "<style" not in text  # no inline style
        for m in re.finditer(r"<script([^>]*)>(.*?)</script>", text, re.S):
            assert 'src="' in m.group(1) and m.group(2) == ""  # local file only, no inline code
        for url in re.findall(r'(?:src|href)="([^"]+)"', text):
            assert url.startswith(("assets/", "../", "connectors/", "index.json", "data:image/")), (
                url
            )
        assert "Content-Security-Policy" in text and "script-src 'self'" in text
    index = (tmp_path / "site" / "index.html").read_text()
    assert '<input id="q" type="search"' in index and 'data-search="' in index
    assert "&lt;script&gt;" in index
    js = (tmp_path / "site" / "assets" / "search.js").read_text()
    assert "fetch(" not in js and "http" not in js  # filters the page itself, no network


class Eventful:
    """A connector with a polling and an instant trigger and an OAuth2 variant beside its key."""

    @hookimpl
    def describe_schema(self):
        from levqor_kernel.oauth import OAUTH2_CREDENTIALS

        item = {"type": "object", "properties": {"n": {"type": "integer"}}}
        return [
            {
                "name": "eventful",
                "title": "Eventful",
                "description": "Numbers that arrive.",
                "credentials": {
                    "anyOf": [
                        {"type": "object", "required": ["key"],
                         "properties": {"key": {"type": "string", "writeOnly": True}}},
                        OAUTH2_CREDENTIALS,
                    ]
                },
                "oauth2": {
                    "authorization_url": "https://eventful.example/authorize",
                    "token_url": "https://eventful.example/token",
                    "scopes": ["read", "hooks"],
                    "title": "Connect Eventful",
                },
                "triggers": {
                    "new_number": {
                        "title": "New number", "description": "A number appended upstream",
                        "kind": "polling",
                        "config": {"type": "object", "properties": {"above": {"type": "integer"}}},
                        "output": item, "sample": {"n": 7},
                    },
                    "pushed": {
                        "title": "Pushed number", "kind": "instant", "webhook": "connector",
                        "config": {"type": "object"}, "output": item, "sample": {"n": 8},
                    },
                },
                "actions": {
                    "a": {"title": "A", "payload": {"type": "object"}, "output": {"type": "object"},
                          "example": {}}
                },
            }
        ]  # fmt: skip

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {}


def test_triggers_and_the_oauth_option_are_listed_in_the_api_and_the_static_site(tmp_path):
    srv = LiveServer(make_app(tmp_path, start_workers=False, plugins=[("eventful", Eventful())]))
    try:
        spec = srv.client().get("/api/v1/openapi.json").json()
        r = srv.client().get("/api/v1/marketplace")
        assert r.status_code == 200, r.text
        data = r.json()
    finally:
        srv.stop()
    from jsonschema import Draft202012Validator

    schema = spec["paths"]["/api/v1/marketplace"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    assert not list(Draft202012Validator(schema).iter_errors(data))
    by_name = {c["name"]: c for c in data["connectors"]}
    ev = by_name["eventful"]
    assert [(t["name"], t["kind"], t["webhook"]) for t in ev["triggers"]] == [
        ("new_number", "polling", None),
        ("pushed", "instant", "connector"),
    ]
    polling = ev["triggers"][0]
    assert (
        polling["title"] == "New number" and polling["description"] == "A number appended upstream"
    )
    assert polling["config"]["properties"]["above"] == {"type": "integer"}
    assert (
        polling["sample"] == {"n": 7} and polling["output"]["properties"]["n"]["type"] == "integer"
    )
    assert ev["oauth2"] == {
        "title": "Connect Eventful",
        "scopes": ["read", "hooks"],
        "pkce": True,
        "authorization_url": "https://eventful.example/authorize",
    }
    assert [a["name"] for a in ev["actions"]] == ["a"]
    # a connector without triggers or OAuth2 says so
    assert by_name["core"]["triggers"] == [] and by_name["core"]["oauth2"] is None

    files = build_site(
        listing(make_plugin_manager(entry_points=False, plugins=[("eventful", Eventful())])),
        tmp_path / "site",
    )
    page = (tmp_path / "site" / "connectors" / "eventful.html").read_text()
    assert "<h2>Triggers</h2>" in page
    kinds = re.findall(
        r'<section class="trigger" data-kind="(\w+)"><h3>([^<]+) <code>([\w.]+)</code>', page
    )
    assert kinds == [
        ("polling", "New number", "eventful.new_number"),
        ("instant", "Pushed number", "eventful.pushed"),
    ]
    assert "Connect (OAuth2): Connect Eventful" in page and "<code>hooks</code>" in page
    assert page.index("<h2>Triggers</h2>") < page.index("<h2>Actions</h2>")
    index = (tmp_path / "site" / "index.html").read_text()
    card = re.search(r'<li class="card" data-search="[^"]*eventful[^"]*">.*?</li>', index).group(0)
    assert "2 triggers · 1 action · Connect (OAuth2)" in card and "pushed number" in card
    core = (tmp_path / "site" / "connectors" / "core.html").read_text()
    assert "<h2>Triggers</h2>" not in core and "Connect (OAuth2)" not in core
    assert any(f.name == "eventful.html" for f in files)
