"""``GET /api/v1/marketplace``: the public listing of installed connectors, built by
:func:`levqor_host.marketplace.listing` once per app."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from levqor_host.marketplace import listing
from levqor_host.web.access import public
from levqor_host.web.operations import answer, operation

bp = Blueprint("marketplace", __name__, url_prefix="/api/v1")

_EXT = "levqor_marketplace"


_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_FIELDS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "description", "required", "secret"],
        "properties": {
            "name": _STR,
            "title": _STR,
            "description": _STR,
            "required": {"type": "boolean"},
            "secret": {"type": "boolean"},
        },
    },
}
MARKETPLACE_SCHEMA = {
    "type": "object",
    "required": ["connectors", "kernel", "failures"],
    "properties": {
        "generator": _STR,
        "kernel": {**_STR, "description": "the installed levqor-kernel version"},
        "failures": {
            "type": "integer",
            "description": "plugins skipped for a broken description (`levqor plugins` says why)",
        },
        "connectors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "title", "distribution", "version", "actions", "credentials"],
                "properties": {
                    "name": _STR,
                    "title": _STR,
                    "description": _STR,
                    "icon": {**_STR, "description": "a data:image/ URI, or empty"},
                    "categories": {"type": "array", "items": _STR},
                    "distribution": _NSTR,
                    "version": _NSTR,
                    "summary": _NSTR,
                    "author": _NSTR,
                    "license": _NSTR,
                    "homepage": _NSTR,
                    "kernel": {
                        **_NSTR,
                        "description": "supported levqor-kernel versions (PEP 440)",
                    },
                    "price": {
                        "type": "object",
                        "description": "credits per step, cheapest and dearest action",
                        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                    },
                    "credentials": {
                        **_FIELDS,
                        "description": "credential fields (those every variant shares)",
                    },
                    "credential_variants": {
                        "type": "array",
                        "description": "the credential's alternatives (oneOf/anyOf): fill in one",
                        "items": {
                            "type": "object",
                            "required": ["title", "description", "fields"],
                            "properties": {"title": _STR, "description": _STR, "fields": _FIELDS},
                        },
                    },
                    "oauth2": {
                        "type": ["object", "null"],
                        "description": "the OAuth2 option (a Connect button in the dashboard); "
                        "null when the credential must be pasted",
                        "required": ["title", "scopes", "pkce"],
                        "properties": {
                            "title": _STR,
                            "scopes": {"type": "array", "items": _STR},
                            "pkce": {"type": "boolean"},
                            "authorization_url": _NSTR,
                        },
                    },
                    "triggers": {
                        "type": "array",
                        "description": "events that start a pipeline (trigger type app)",
                        "items": {
                            "type": "object",
                            "required": ["name", "title", "kind", "config", "output", "sample"],
                            "properties": {
                                "name": _STR,
                                "title": _STR,
                                "description": _STR,
                                "kind": {
                                    "enum": ["polling", "instant"],
                                    "description": "polling: checked every interval; instant: "
                                    "the app calls the host's webhook",
                                },
                                "webhook": {
                                    "enum": ["trigger", "connector", None],
                                    "description": "instant only: one URL per pipeline, or one "
                                    "for the whole connector",
                                },
                                "config": {"type": "object"},
                                "output": {"type": "object"},
                                "sample": {"type": "object"},
                            },
                        },
                    },
                    "actions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "title", "price", "payload", "output"],
                            "properties": {
                                "name": _STR,
                                "title": _STR,
                                "description": _STR,
                                "price": {"type": "integer"},
                                "payload": {"type": "object"},
                                "output": {"type": "object"},
                                "example": {"type": "object"},
                            },
                        },
                    },
                },
            },
        },
    },
}


@bp.get("/marketplace")
@public("the catalog of installed connectors, the same for everyone")
@operation(
    "The marketplace: installed connectors with package metadata, triggers, actions, "
    "schemas, prices and the OAuth2 option (public)",
    "Every installed connector, computed once per app from the plugins' descriptions and "
    "their distributions' metadata; broken plugins are only counted.",
    tag="catalog",
    responses={200: answer(MARKETPLACE_SCHEMA)},
)
def marketplace() -> Response:
    """Public: every installed connector (computed once per app; plugins load at start-up)."""
    data = current_app.extensions.get(_EXT)
    if data is None:
        data = current_app.extensions[_EXT] = listing(current_app.extensions["levqor"].pm)
    # plugin failures can name local paths: the public listing only says how many there are
    return jsonify({**data, "failures": len(data["failures"])})
