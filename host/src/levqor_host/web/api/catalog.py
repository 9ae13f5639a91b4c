"""The API's description of itself and of the caller: ``/openapi.json``, ``/connectors``, ``/me``."""

from __future__ import annotations

from flask import Response, current_app, jsonify

from levqor_host.web.access import current_user, public, require, signed_in
from levqor_host.web.api.blueprint import bp, state
from levqor_host.web.api.schemas import Catalog, Me
from levqor_host.web.openapi import openapi_document
from levqor_host.web.operations import answer, operation


@bp.get("/openapi.json")
@public("the API description; it holds no data")
@operation(
    "This document",
    "The OpenAPI 3.1 description of every route this server answers, generated from the "
    "routes' own declarations (plugins' routes included).",
    tag="meta",
    responses={200: answer({"type": "object"})},
)
def openapi() -> Response:
    return jsonify(openapi_document(current_app))


@bp.get("/connectors")
@require("pipelines:read")
@operation(
    "The installed connector catalog",
    "Every connector the installed plugins offer, with its actions, payload and output JSON "
    "Schemas, credential schema and price, its triggers (kind, config and output schemas, "
    "sample); plugins that failed to load are listed with why. A connector with an OAuth2 "
    "option says whether this server's operator configured its client (oauth2_configured: "
    "Connect works). polling: how often a polling trigger may be checked on this host "
    "(seconds).",
    tag="catalog",
    responses={200: answer(Catalog)},
)
def connectors() -> Response:
    st = state()
    data = st.pm.catalog.to_json()
    listed = list(data["connectors"].values())
    for c in listed:
        if c.get("oauth2") and st.oauth is not None:
            c["oauth2_configured"] = st.oauth.configured(c["name"])
    return jsonify(
        {
            "connectors": listed,
            "failures": [f.to_dict() for f in st.pm.failures],
            "polling": {
                "min_interval": st.config.triggers.poll_min_interval,
                "default_interval": st.config.triggers.poll_default_interval,
            },
        }
    )


@bp.get("/me")
@signed_in()
@operation(
    "The signed-in user",
    "Who the credentials belong to: id, email, name, plan, whether an admin, referral code.",
    tag="users",
    responses={200: answer(Me)},
)
def me() -> Response:
    u = current_user()
    return jsonify(
        {
            "id": u["id"],
            "email": u["email"],
            "name": u.get("name"),
            "plan": u.get("plan"),
            "is_admin": bool(u.get("is_admin")),
            "referral_code": u.get("referral_code"),
        }
    )
