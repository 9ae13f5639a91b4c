"""Standard cron on APScheduler: the one place a cron expression becomes a trigger.

APScheduler's ``CronTrigger.from_crontab`` numbers Monday 0 (cron's 0 is Sunday) and requires
both day fields to match. Here an expression is parsed by :func:`levqor_kernel.cron.parse_cron`
(the parser pipeline validation uses) and translated:

- the field values become APScheduler value lists, day-of-week shifted (cron 0 = Sunday is
  APScheduler's 6);
- when both day fields are restricted, the next fire time is the earlier of two APScheduler
  triggers, one per day field: cron's "either day matches" rule;
- fields are matched on the wall clock of the schedule's time zone, and a daylight-saving change
  is handled as cron(8) does: a job at fixed times (neither minute nor hour begins with ``*``)
  whose time a spring-forward skips runs once at the change, and runs once, the first time, in
  an hour a fall-back repeats; a job with ``*`` in its minute or hour runs at every real minute
  that matches: none in a skipped hour, both passes of a repeated one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from levqor_kernel.cron import CronExpr, parse_cron

__all__ = ["CronSchedule", "cron_trigger", "next_fire_times"]

#: More than any daylight-saving change moves a wall clock.
MAX_SHIFT = timedelta(hours=3)


def _ranges(values: Iterable[int]) -> str:
    """``{0, 1, 2, 5}`` -> ``"0-2,5"``: an APScheduler field expression."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def apscheduler_fields(expr: CronExpr) -> list[dict[str, str]]:
    """The keyword arguments of one ``CronTrigger`` per alternative (two when either day may
    match), in APScheduler's numbering (Monday 0)."""
    common = {
        "second": "0",
        "minute": _ranges(expr.minutes),
        "hour": _ranges(expr.hours),
        "month": _ranges(expr.months),
    }
    days = _ranges(expr.days)
    weekdays = _ranges((d - 1) % 7 for d in expr.weekdays)
    if expr.either_day:
        return [{**common, "day": days}, {**common, "day_of_week": weekdays}]
    return [{**common, "day": days, "day_of_week": weekdays}]


def _ceil_second(t: datetime) -> datetime:
    return t + timedelta(microseconds=1_000_000 - t.microsecond) if t.microsecond else t


class CronSchedule(BaseTrigger):
    """An APScheduler trigger with standard cron semantics in one time zone (see the module)."""

    __slots__ = ("expr", "timezone", "_wall")

    def __init__(self, expr: CronExpr, timezone: ZoneInfo) -> None:
        self.expr = expr
        self.timezone = timezone
        # matched against naive wall-clock times passed as UTC, so no shift ever applies
        self._wall = [CronTrigger(**kw, timezone=UTC) for kw in apscheduler_fields(expr)]

    def __str__(self) -> str:
        return f"cron[{self.expr.expr!r}, {self.timezone.key}]"

    def __repr__(self) -> str:
        return f"<CronSchedule {self.expr.expr!r} {self.timezone.key}>"

    def _next_wall(self, wall: datetime) -> datetime | None:
        """The first wall-clock time at or after ``wall`` (naive) that the fields match."""
        try:
            found = [t.get_next_fire_time(None, wall.replace(tzinfo=UTC)) for t in self._wall]
        except (OverflowError, ValueError):  # past the year 9999
            return None
        times = [f for f in found if f is not None]
        return min(times).replace(tzinfo=None) if times else None

    def _offset_change(self, before: datetime, after: datetime) -> datetime:
        """The instant, to the second, where the UTC offset changes between two instants."""
        lo, hi = int(before.timestamp()), int(after.timestamp())
        first = datetime.fromtimestamp(lo, self.timezone).utcoffset()
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.timezone).utcoffset() == first:
                lo = mid
            else:
                hi = mid
        return datetime.fromtimestamp(hi, UTC)

    def _instants(self, wall: datetime) -> list[datetime]:
        """The real instants (UTC) at which a matching wall-clock time fires."""
        early = wall.replace(tzinfo=self.timezone, fold=0).astimezone(UTC)
        late = wall.replace(tzinfo=self.timezone, fold=1).astimezone(UTC)
        if early == late:
            return [early]
        if early.astimezone(self.timezone).replace(tzinfo=None) == wall:
            # a fall-back repeats this time: a fixed-time job runs the first time only
            return [early, late] if self.expr.wildcard_time else [early]
        # a spring-forward skips this time: a fixed-time job runs at the change
        return [] if self.expr.wildcard_time else [self._offset_change(late, early)]

    def _near_change(self, t: datetime) -> bool:
        tz = self.timezone
        return (t - MAX_SHIFT).astimezone(tz).utcoffset() != (t + MAX_SHIFT).astimezone(tz).utcoffset()

    def first_from(self, start: datetime) -> datetime | None:
        """The first fire time at or after ``start`` (aware), in UTC.

        (UTC, because arithmetic and comparisons on two times in one zone read their wall
        clocks and lose which pass of a repeated hour they are in.)"""
        start = _ceil_second(start.astimezone(UTC))
        wall = start.astimezone(self.timezone).replace(tzinfo=None)
        if self._near_change(start):
            wall -= MAX_SHIFT  # a fall-back ahead brings earlier wall-clock times back
        best: datetime | None = None
        w = self._next_wall(wall)
        while w is not None:
            for t in self._instants(w):
                if t >= start and (best is None or t < best):
                    best = t
            if best is not None and not self._near_change(best):
                break
            w = self._next_wall(w + timedelta(minutes=1))
            if best is not None and w is not None:
                if w > best.astimezone(self.timezone).replace(tzinfo=None) + MAX_SHIFT:
                    break
        return best

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is None:
            return self.first_from(now)
        after_previous = previous_fire_time.astimezone(UTC) + timedelta(microseconds=1)
        return self.first_from(min(now.astimezone(UTC), after_previous))


def cron_trigger(expr: str, tz: str = "UTC") -> CronSchedule:
    """The trigger for a standard cron expression in an IANA time zone.

    Raises ``levqor_kernel.cron.CronError`` (a ``ValueError``) for an expression that is not
    standard cron and ``ZoneInfoNotFoundError`` (a ``KeyError``) for an unknown zone.
    """
    return CronSchedule(parse_cron(expr), ZoneInfo(tz))


def next_fire_times(
    expr: str, tz: str = "UTC", count: int = 5, after: datetime | None = None
) -> list[str]:
    """The next ``count`` fire times (ISO 8601 with the zone's offset) at or after ``after``
    (default: now), exactly as the scheduler will fire them."""
    trig = cron_trigger(expr, tz)
    out: list[str] = []
    start = (after or datetime.now(UTC)).astimezone(UTC)
    for _ in range(count):
        nxt = trig.first_from(start)
        if nxt is None:
            break
        out.append(nxt.astimezone(trig.timezone).isoformat())
        start = nxt + timedelta(microseconds=1)
    return out
