"""The web layer: Flask blueprints only (the JSON API, webhooks, the dashboard, ops endpoints).

Routes parse and check the request, call the domain services and render the answer; they run
no SQL of their own. Each route declares its access (:mod:`levqor_kernel.access`) and its
operation (:mod:`levqor_host.web.operations`), from which ``/api/v1/openapi.json`` is generated
(:mod:`levqor_host.web.openapi`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from levqor_host.services import Services


def register_blueprints(app: Flask, state: Services) -> None:
    """Register the host's blueprints on ``app``, then the plugins' (``register_blueprints``
    hook), then the dashboard with the plugins' pages."""
    from levqor_host.web.api import bp as api
    from levqor_host.web.api.plan import bp as plan
    from levqor_host.web.api.schedule import bp as schedule
    from levqor_host.web.dashboard import install_dashboard
    from levqor_host.web.growth import bp as growth
    from levqor_host.web.marketplace import bp as marketplace
    from levqor_host.web.oauth import bp as oauth
    from levqor_host.web.ops import bp as ops
    from levqor_host.web.resume import bp as resume
    from levqor_host.web.sessions import bp as sessions
    from levqor_host.web.support import bp as support
    from levqor_host.web.webhooks import bp as webhooks

    for bp in (
        sessions, ops, support, api, webhooks, growth, plan, marketplace, schedule, resume, oauth
    ):
        app.register_blueprint(bp)
    state.pm.hook.register_blueprints(app=app, state=state)
    # HTML shells + ES modules over the JSON API, with the pages of plugins
    install_dashboard(app, state.pm)
