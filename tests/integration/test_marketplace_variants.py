"""The marketplace's credential variants, listed with levqor-gmail's real description (a oneOf
credential: Resend or the Gmail API) beside a plugin of the test's own; needs the host and the
installed connectors together."""

from __future__ import annotations

import json
import re

from e2e_support import LiveServer, make_app
from levqor_host.marketplace import build_site, listing
from levqor_kernel import hookimpl
from levqor_kernel.plugins import make_plugin_manager

PLANTED = "planted-default-SECRET-7a6b5c"


class Variants:
    """A connector whose credential is one of two kinds, with a value planted where a real
    secret could be left (a default, an example, a discriminator's const)."""

    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "twokinds",
                "title": "Two kinds",
                "description": "An API key or an OAuth token.",
                "credentials": {
                    "type": "object",
                    "required": ["region"],
                    "properties": {"region": {"type": "string", "description": "eu or us"}},
                    "oneOf": [
                        {
                            "title": "API key",
                            "description": "A key from the settings page",
                            "required": ["api_key"],
                            "properties": {
                                "api_key": {
                                    "type": "string",
                                    "writeOnly": True,
                                    "title": "Key",
                                    "default": PLANTED,
                                },
                            },
                        },
                        {
                            "required": ["kind", "token"],
                            "properties": {
                                "kind": {"const": PLANTED},
                                "token": {"type": "string", "examples": [PLANTED]},
                            },
                        },
                    ],
                },
                "actions": {
                    "a": {"title": "A", "payload": {"type": "object"}, "output": {"type": "object"},
                          "example": {}}
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        return {}


def field(name, title, description="", required=True, secret=False):
    return {"name": name, "title": title, "description": description, "required": required,
            "secret": secret}


def test_credential_variants_are_listed_with_their_fields(tmp_path):
    """A oneOf credential (Email: Resend or Gmail) lists each variant, not "no credentials"."""
    srv = LiveServer(make_app(tmp_path, start_workers=False, plugins=[("twokinds", Variants())]))
    try:
        spec = srv.client().get("/api/v1/openapi.json").json()
        r = srv.client().get("/api/v1/marketplace")
        assert r.status_code == 200, r.text
        data = r.json()
    finally:
        srv.stop()
    from jsonschema import Draft202012Validator

    schema = spec["paths"]["/api/v1/marketplace"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    assert not list(Draft202012Validator(schema).iter_errors(data))
    by_name = {c["name"]: c for c in data["connectors"]}
    gmail = by_name["gmail"]
    assert gmail["credentials"] == []
    assert [v["title"] for v in gmail["credential_variants"]] == [
        "Resend", "Gmail API", "Google account (Connect)"]  # fmt: skip
    resend, google, connected = gmail["credential_variants"]
    assert "Connect" in connected["description"] and gmail["oauth2"]["title"] == "Connect Gmail"
    assert "Resend" in resend["description"] and "OAuth" in google["description"]
    assert [(f["name"], f["required"], f["secret"]) for f in resend["fields"]] == [
        ("resend_api_key", True, True), ("api_base", False, False)]
    assert resend["fields"][0]["title"] == "Resend API key"
    assert "re_" in resend["fields"][0]["description"]
    assert [(f["name"], f["required"], f["secret"]) for f in google["fields"]] == [
        ("google_access_token", True, True)]
    assert "gmail.send" in google["fields"][0]["description"]

    two = by_name["twokinds"]
    assert two["credentials"] == [field("region", "region", "eu or us")]
    assert two["credential_variants"] == [
        {"title": "API key", "description": "A key from the settings page",
         "fields": [field("api_key", "Key", secret=True)]},
        # no title: named by its place; the shared "region" stays required in each variant
        {"title": "Option 2", "description": "",
         "fields": [field("kind", "kind"), field("token", "token")]},
    ]
    # a connector with a plain credential has no variants
    assert by_name["telegram"]["credential_variants"] == []
    assert by_name["telegram"]["credentials"][0]["name"] == "bot_token"
    # Slack: an incoming webhook or a connected app
    assert [v["title"] for v in by_name["slack"]["credential_variants"]] == [
        "Incoming webhook",
        "Slack app (Connect)",
    ]
    assert PLANTED not in r.text


def test_static_site_lists_each_credential_variant(tmp_path):
    pm = make_plugin_manager(plugins=[("twokinds", Variants())])
    data = listing(pm)
    build_site(data, tmp_path / "site")
    page = (tmp_path / "site" / "connectors" / "gmail.html").read_text()
    assert "None needed" not in page
    assert "One of these 3 kinds:" in page
    resend = page.index("<h3>Resend</h3>")
    google = page.index("<h3>Gmail API</h3>")
    assert resend < page.index("<code>resend_api_key</code>") < google
    assert google < page.index("<code>google_access_token</code>")
    assert "A Resend API key (re_...), sending access is enough" in page
    rows = re.findall(r"<tr><td><code>(\w+)</code></td><td>[^<]*</td><td>(\w+)</td><td>(\w+)</td>", page)
    assert rows[:3] == [("resend_api_key", "yes", "yes"), ("api_base", "no", "no"),
                        ("google_access_token", "yes", "yes")]
    assert ("access_token", "yes", "yes") in rows[3:]  # the connected account's token: secret
    two = (tmp_path / "site" / "connectors" / "twokinds.html").read_text()
    assert "<code>region</code>" in two and "<h3>API key</h3>" in two and "<h3>Option 2</h3>" in two
    assert PLANTED not in two and PLANTED not in (tmp_path / "site" / "index.json").read_text()
    index = json.loads((tmp_path / "site" / "index.json").read_text())
    gmail = next(c for c in index["connectors"] if c["name"] == "gmail")
    assert [v["title"] for v in gmail["credential_variants"]] == [
        "Resend", "Gmail API", "Google account (Connect)"]  # fmt: skip
    # no credential at all still says so
    core = (tmp_path / "site" / "connectors" / "core.html").read_text()
    assert "None needed." in core
