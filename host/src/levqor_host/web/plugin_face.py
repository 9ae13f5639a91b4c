"""The request-bound face the service object hands plugins' routes (``state.authenticate``,
``state.json_body``): the same sign-in check and JSON parser as the host's own routes."""

from __future__ import annotations

from typing import Any

from flask import g, has_request_context

from levqor_host.web.errors import json_body


class FlaskRequestFace:
    """:class:`levqor_host.services.RequestFace` over Flask's current request."""

    def __init__(self, max_json_depth: int) -> None:
        self.max_json_depth = max_json_depth

    def authenticate(self, scope: str | None = None) -> dict:
        from levqor_host.web.access import check_request

        return check_request(scope).user

    def json_body(self, *, required: bool = False, max_bytes: int | None = None) -> Any:
        return json_body(self.max_json_depth, required=required, max_bytes=max_bytes)

    def note_rate_limited(self) -> None:
        if has_request_context():  # the request hook then does not count this 429 again
            g.levqor_rate_limit_counted = True
