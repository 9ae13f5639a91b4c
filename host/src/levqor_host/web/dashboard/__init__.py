"""The web dashboard: server-rendered HTML shells plus small ES modules.

The pages hold no data of their own. Every number, list and action goes through the public
JSON API (``/api/v1/...``) with the session cookie (or a Supabase token the user pasted), the
same API third parties use, so nothing the dashboard can do is missing from the API. No asset
comes from a CDN and nothing is inline (no ``<script>`` body, no ``on*=`` attribute, no
``style=`` attribute): the strict Content-Security-Policy of the security layer holds on every
page. Vendored front-end packages (Chart.js) live in ``static/vendor/``, built from
``frontend/`` at the repository root (the Python install needs no Node).

Plugins add pages (the ``register_dashboard_pages`` hook: the billing page of levqor-stripe)
with :func:`install_dashboard`; the navigation of an app is its own pages' and its plugins'.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, render_template, url_for
from levqor_kernel.host import DashboardPage

from levqor_host import __version__
from levqor_host.web.access import public
from levqor_host.web.operations import content, declare, document_static_files, operation

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

#: the host's navigation: (order, section, path, label); plugins' pages fit in by their order
NAV = (
    (10, "pipelines", "/", "Pipelines"),
    (20, "runs", "/runs", "Runs"),
    (30, "credentials", "/credentials", "Credentials"),
    (40, "usage", "/usage", "Usage"),
    (60, "referrals", "/referrals", "Referrals"),
    (70, "marketplace", "/marketplace", "Marketplace"),
)

log = logging.getLogger("levqor.dashboard")


@dataclass(frozen=True)
class Dashboard:
    """One app's dashboard: its plugins' pages and the navigation (``section, path, label``)."""

    plugin_pages: tuple[DashboardPage, ...]
    nav: tuple[tuple[str, str, str], ...]


_HTML = content("The page (HTML; its data comes from the JSON API)", "text/html")


def _make_view(template: str, script: str, title: str, section: str | None, page: str):
    """The view of one page shell; ``script`` is a file of js/pages/ or a same-origin path."""

    @public("the page shell, the same for everyone; its data comes from the checked API")
    @operation(
        f"Dashboard page: {title}",
        "The page's HTML shell; its module reads and changes everything through the JSON "
        "API with the session cookie.",
        tag="dashboard",
        responses={200: _HTML},
    )
    def view(**ids: str) -> Response:
        cfg = current_app.extensions["levqor"].config
        dash: Dashboard = current_app.extensions["levqor_dashboard"]
        script_url = (
            script
            if script.startswith("/")
            else url_for("dashboard.static", filename=f"js/pages/{script}.js")
        )
        resp = current_app.make_response(
            render_template(
                template,
                title=title,
                script=page,
                script_url=script_url,
                section=section,
                nav=dash.nav,
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
        _rule,
        _endpoint,
        _make_view(_template, _script, _title, _section, _script),
        methods=["GET"],
    )

document_static_files(
    bp,
    declare(
        "The dashboard's static files (CSS, ES modules, vendored Chart.js)",
        "Versioned with the package; no file comes from a CDN.",
        tag="dashboard",
        responses={200: content("the file", "text/css", "text/javascript", "image/svg+xml")},
    ),
)


def install_dashboard(app: Flask, pm: Any) -> Dashboard:
    """Register the dashboard on ``app`` with the pages of the ``register_dashboard_pages``
    hook (a blueprint of this app, ``dashboard_pages``) and its navigation."""
    app.register_blueprint(bp)
    taken = {rule for _e, rule, *_ in PAGES} | {page[0] for page in PAGES}
    pages: list[DashboardPage] = []
    for answer in pm.hook.register_dashboard_pages():
        for page in answer or ():
            if not isinstance(page, DashboardPage):
                log.warning("a plugin's dashboard page is not a DashboardPage: %r", page)
            elif page.path in taken or page.name in taken:
                log.warning("dashboard page %s (%s) skipped: taken", page.name, page.path)
            else:
                taken |= {page.path, page.name}
                pages.append(page)
    if pages:
        extra = Blueprint("dashboard_pages", __name__)
        for page in pages:
            extra.add_url_rule(
                page.path,
                page.name,
                _make_view(page.template, page.script, page.title, page.name, page.name),
                methods=["GET"],
            )
        app.register_blueprint(extra)
    nav = sorted(
        [*NAV, *((p.order, p.name, p.path, p.nav_label) for p in pages if p.nav_label)],
        key=lambda entry: entry[0],
    )
    dash = Dashboard(tuple(pages), tuple((s, path, label) for _o, s, path, label in nav))
    app.extensions["levqor_dashboard"] = dash
    return dash
