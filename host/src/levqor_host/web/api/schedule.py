"""``GET /api/v1/schedule/preview``: the next fire times of a cron trigger (the builder shows
them while you type; the scheduler uses the same trigger, ``levqor_host.cron``)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, Response, jsonify, request
from levqor_kernel.pipeline import check_cron
from pydantic import BaseModel

from levqor_host.cron import next_fire_times
from levqor_host.errors import ApiError
from levqor_host.web.access import require
from levqor_host.web.operations import Error, answer, bounded_int, operation, query

bp = Blueprint("schedule", __name__, url_prefix="/api/v1")

MAX_COUNT = 20


def _problem(pointer: str, message: str) -> ApiError:
    return ApiError(
        422,
        "invalid_schedule",
        message,
        {"problems": [{"pointer": pointer, "message": message}]},
    )


class Preview(BaseModel):
    cron: str
    timezone: str
    next: list[datetime]


@bp.get("/schedule/preview")
@require("pipelines:read")
@operation(
    "The next fire times of a cron trigger",
    "The next fire times of a standard cron expression in a time zone (what the scheduler "
    "will do; 0 and 7 are Sunday, daylight-saving changes as cron(8)).",
    tag="triggers",
    responses={
        200: answer(Preview),
        422: answer(
            Error,
            "Invalid cron or time zone (details.problems with JSON pointers into the pipeline "
            "document: /trigger/cron, /trigger/timezone)",
        ),
    },
    params=[
        query("cron", {"type": "string", "maxLength": 200}, "5-field cron or an @-macro"),
        query("timezone", {"type": "string", "default": "UTC"}, "IANA time zone name"),
        query(
            "after",
            {"type": "string", "format": "date-time"},
            "fire times at or after this instant (default: now)",
        ),
        query(
            "count",
            {"type": "integer", "minimum": 1, "maximum": MAX_COUNT, "default": 5},
            "how many fire times",
            parse=bounded_int("count", 1, MAX_COUNT),
            default=5,
        ),
    ],
)
def preview(count: int) -> Response:
    cron = (request.args.get("cron") or "").strip()
    tz = (request.args.get("timezone") or "UTC").strip()
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
    times = next_fire_times(cron, tz, count, _after(request.args.get("after")))
    return jsonify({"cron": cron, "timezone": tz, "next": times})


def _after(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        after = datetime.fromisoformat(raw.strip())
    except ValueError:
        after = None
    if after is None or after.tzinfo is None or not 1970 <= after.year <= 9000:
        raise ApiError(
            400,
            "invalid_request",
            "after must be an ISO 8601 date-time with an offset between the years 1970 and "
            "9000, e.g. 2026-03-08T00:00:00Z",
        )
    return after
