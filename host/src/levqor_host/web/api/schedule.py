"""``GET /api/v1/schedule/preview``: the next fire times of a cron trigger (the builder shows
them while you type; the scheduler uses the same trigger, ``levqor_host.cron``)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, jsonify, request
from levqor_kernel.pipeline import check_cron

from levqor_host.cron import next_fire_times
from levqor_host.errors import ApiError
from levqor_host.security.auth import require
from levqor_host.web.api.openapi import ERR, _json, _op, _q

bp = Blueprint("schedule", __name__, url_prefix="/api/v1")

MAX_COUNT = 20


def _problem(pointer: str, message: str) -> ApiError:
    return ApiError(
        422,
        "invalid_schedule",
        message,
        {"problems": [{"pointer": pointer, "message": message}]},
    )


@bp.get("/schedule/preview")
@require("pipelines:read")
def preview():
    cron = (request.args.get("cron") or "").strip()
    tz = (request.args.get("timezone") or "UTC").strip()
    raw_count = request.args.get("count", "5")
    try:
        count = int(raw_count)
    except ValueError:
        raise ApiError(400, "invalid_request", "count must be a whole number") from None
    if not 1 <= count <= MAX_COUNT:
        raise ApiError(400, "invalid_request", f"count must be between 1 and {MAX_COUNT}")
    if not cron:
        raise _problem("/trigger/cron", "cron is required, e.g. '*/15 * * * *' or '@daily'")
    if len(cron) > 200:
        raise _problem("/trigger/cron", "cron is longer than 200 characters")
    msg = check_cron(cron)
    if msg:
        raise _problem("/trigger/cron", msg)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise _problem("/trigger/timezone", f"unknown time zone {tz[:64]!r}") from None
    raw_after = request.args.get("after")
    after = None
    if raw_after is not None:
        try:
            after = datetime.fromisoformat(raw_after.strip())
        except ValueError:
            after = None
        if after is None or after.tzinfo is None or not 1970 <= after.year <= 9000:
            raise ApiError(
                400, "invalid_request",
                "after must be an ISO 8601 date-time with an offset between the years 1970 and "
                "9000, e.g. 2026-03-08T00:00:00Z",
            )
    times = next_fire_times(cron, tz, count, after)
    return jsonify({"cron": cron, "timezone": tz, "next": times})


bp.openapi_paths = {  # type: ignore[attr-defined]
    "/api/v1/schedule/preview": {
        "get": _op(
            "The next fire times of a standard cron expression in a time zone (what the "
            "scheduler will do; 0 and 7 are Sunday, daylight-saving changes as cron(8))",
            {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["cron", "timezone", "next"],
                        "properties": {
                            "cron": {"type": "string"},
                            "timezone": {"type": "string"},
                            "next": {
                                "type": "array",
                                "items": {"type": "string", "format": "date-time"},
                            },
                        },
                    }
                ),
                "422": _json(
                    {"$ref": "#/components/schemas/Error"},
                    "Invalid cron or time zone (details.problems with JSON pointers into the "
                    "pipeline document: /trigger/cron, /trigger/timezone)",
                ),
                "400": ERR,
            },
            scope="pipelines:read",
            params=[
                _q("cron", {"type": "string", "maxLength": 200}, "5-field cron or an @-macro"),
                _q("timezone", {"type": "string", "default": "UTC"}, "IANA time zone name"),
                _q(
                    "after",
                    {"type": "string", "format": "date-time"},
                    "fire times at or after this instant (default: now)",
                ),
                _q(
                    "count",
                    {"type": "integer", "minimum": 1, "maximum": MAX_COUNT, "default": 5},
                    "how many fire times",
                ),
            ],
            tag="triggers",
        )
    }
}
