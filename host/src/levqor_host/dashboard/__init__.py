"""The web dashboard: server-rendered HTML shells plus small ES modules.

The pages hold no data of their own. Every number, list and action goes through the public
JSON API (``/api/v1/...``) with the session cookie (or a Supabase token the user pasted), the
same API third parties use, so nothing the dashboard can do is missing from the API. No asset
comes from a CDN and nothing is inline (no ``<script>`` body, no ``on*=`` attribute, no
``style=`` attribute): the strict Content-Security-Policy of the security layer holds on every
page. Vendored front-end packages (Chart.js) live in ``static/vendor/``, built from
``frontend/`` at the repository root (the Python install needs no Node).
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from .. import __version__
from ..api.openapi import _op, _path_param
from ..security.auth import public

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static",
)

#: (endpoint, rule, template, page script, title, nav section)
PAGES = (
    ("signin", "/signin", "signin.html", "signin", "Sign in", None),
    ("pipelines", "/", "pipelines.html", "pipelines", "Pipelines", "pipelines"),
    ("builder_new", "/pipelines/new", "builder.html", "builder", "New pipeline", "pipelines"),
    ("builder", "/pipelines/<pipeline_id>", "builder.html", "builder", "Pipeline", "pipelines"),
    ("runs", "/runs", "runs.html", "runs", "Runs", "runs"),
    ("run", "/runs/<run_id>", "run.html", "run", "Run", "runs"),
    (
        "credentials",
        "/credentials",
        "credentials.html",
        "credentials",
        "Credentials",
        "credentials",
    ),
    ("usage", "/usage", "usage.html", "usage", "Usage", "usage"),
    ("billing", "/billing", "billing.html", "billing", "Billing", "billing"),
    ("referrals", "/referrals", "referrals.html", "referrals", "Referrals", "referrals"),
    (
        "marketplace",
        "/marketplace",
        "marketplace.html",
        "marketplace",
        "Marketplace",
        "marketplace",
    ),
)

NAV = (
    ("pipelines", "/", "Pipelines"),
    ("runs", "/runs", "Runs"),
    ("credentials", "/credentials", "Credentials"),
    ("usage", "/usage", "Usage"),
    ("billing", "/billing", "Billing"),
    ("referrals", "/referrals", "Referrals"),
    ("marketplace", "/marketplace", "Marketplace"),
)


def _make_view(template: str, script: str, title: str, section: str | None):
    @public("the page shell, the same for everyone; its data comes from the checked API")
    def view(**ids: str):
        cfg = current_app.extensions["levqor"].config
        resp = current_app.make_response(
            render_template(
                template,
                title=title,
                script=script,
                section=section,
                nav=NAV,
                ids=ids,
                version=__version__,
                base_url=cfg.base_url,
            )
        )
        # the shell is the same for everyone; the data comes from the API (no-store there)
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    return view


for _endpoint, _rule, _template, _script, _title, _section in PAGES:
    bp.add_url_rule(
        _rule, _endpoint, _make_view(_template, _script, _title, _section), methods=["GET"]
    )

_HTML = {
    "description": "The page (HTML; its data comes from the JSON API)",
    "content": {"text/html": {}},
}


def _page_doc(summary: str, params: list | None = None) -> dict:
    return {"get": _op(summary, {"200": _HTML}, params=params, public=True, tag="dashboard")}


def _openapi_path(rule: str) -> str:
    return rule.replace("<pipeline_id>", "{pipeline_id}").replace("<run_id>", "{run_id}")


bp.openapi_paths = {  # type: ignore[attr-defined]
    **{
        _openapi_path(rule): _page_doc(
            f"Dashboard page: {title}",
            [_path_param(p) for p in ("pipeline_id", "run_id") if f"<{p}>" in rule] or None,
        )
        for _e, rule, _t, _s, title, _n in PAGES
    },
    "/dashboard/static/{filename}": {
        "get": _op(
            "The dashboard's static files (CSS, ES modules, vendored Chart.js)",
            {
                "200": {
                    "description": "the file",
                    "content": {"text/css": {}, "text/javascript": {}, "image/svg+xml": {}},
                }
            },
            params=[_path_param("filename")],
            public=True,
            tag="dashboard",
        )
    },
}
