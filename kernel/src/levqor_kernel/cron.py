"""Standard cron expressions, as crontab(5) describes them, parsed in one place.

Validation and the host's scheduler both read expressions through :func:`parse_cron`, so
what is accepted is what fires. The dialect:

- five fields: minute (0-59), hour (0-23), day-of-month (1-31), month (1-12 or ``JAN``-``DEC``),
  day-of-week (0-7 or ``SUN``-``SAT``; 0 and 7 are Sunday, 1-5 is Monday to Friday);
- each field is ``*`` or a comma list of values and ranges (``1-5``, ``MON-FRI``), each with an
  optional step (``*/15``, ``0-30/10``; ``5/15`` reads as ``5-59/15``); names are three letters,
  in any case;
- the macros ``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily`` ``@midnight``
  ``@hourly`` (``@weekly`` is Sunday 00:00);
- when day-of-month and day-of-week are both restricted (neither begins with ``*``), a day
  matches if either matches: ``0 9 13 * 5`` fires on every 13th and every Friday.

Quartz-style extensions (``L``, ``W``, ``#``, ``?``) and a seconds or year field are not cron
and are refused, each with a message naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FIELDS", "MACROS", "CronError", "CronExpr", "parse_cron"]

#: (name, lowest, highest) of the five fields, in order.
FIELDS: tuple[tuple[str, int, int], ...] = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)

#: The @-macros and the five fields each stands for.
MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
)}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_NUMBER = re.compile(r"[0-9]{1,4}")
_HINT = {
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT, where 0 and 7 are Sunday",
}


class CronError(ValueError):
    """An expression that is not standard cron; ``field`` names the field at fault, if one is."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CronExpr:
    """A parsed expression: the values each field allows, in cron's own numbering.

    ``weekdays`` counts 0 = Sunday to 6 = Saturday (a written 7 is stored as 0).
    """

    expr: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    #: the day-of-month / day-of-week field does not begin with ``*``
    days_restricted: bool
    weekdays_restricted: bool
    #: the minute or hour field begins with ``*``: cron(8) runs such a job "normally" across a
    #: daylight-saving change, and a job at fixed times once (see the host's trigger)
    wildcard_time: bool

    @property
    def either_day(self) -> bool:
        """Both day fields are restricted, so a day matches if either of them matches."""
        return self.days_restricted and self.weekdays_restricted


def _value(text: str, name: str, lo: int, hi: int) -> int:
    if _NUMBER.fullmatch(text):
        v = int(text)
    else:
        names = _MONTHS if name == "month" else _DAYS if name == "day-of-week" else None
        if names is None or text.lower() not in names:
            allowed = _HINT.get(name, f"{lo}-{hi}")
            raise CronError(f"{name}: {text!r} is not a valid value ({allowed})", name)
        v = names[text.lower()]
    if not lo <= v <= hi:
        allowed = _HINT.get(name, f"{lo}-{hi}")
        raise CronError(f"{name}: {v} is out of range ({allowed})", name)
    return v


def _field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text) or int(step_text) < 1:
                raise CronError(f"{name}: step {step_text!r} in {item!r} must be a whole number >= 1", name)
            step = int(step_text)
        if span == "*":
            start, end = lo, hi
        elif "-" in span:
            first, _, last = span.partition("-")
            start, end = _value(first, name, lo, hi), _value(last, name, lo, hi)
            if start > end:
                raise CronError(f"{name}: range {span!r} runs backwards", name)
        elif span:
            start = _value(span, name, lo, hi)
            end = hi if slash else start
        else:
            raise CronError(f"{name}: empty item in {text!r}", name)
        values.update(range(start, end + 1, step))
    if name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


def parse_cron(expr: str) -> CronExpr:
    """Parse a five-field expression or an @-macro; :class:`CronError` says what is wrong."""
    text = expr.strip()
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise CronError(f"unknown macro {text[:20]!r}: use one of {', '.join(MACROS)}")
        fields = MACROS[text.lower()].split()
    else:
        fields = text.split()
    if len(fields) != 5:
        raise CronError(
            "cron must have 5 fields: minute hour day-of-month month day-of-week "
            f"(or one of {', '.join(MACROS)}); got {len(fields)}"
        )
    sets = [_field(f, *spec) for f, spec in zip(fields, FIELDS, strict=True)]
    parsed = CronExpr(
        text, *sets,
        days_restricted=not fields[2].startswith("*"),
        weekdays_restricted=not fields[4].startswith("*"),
        wildcard_time=fields[0].startswith("*") or fields[1].startswith("*"),
    )
    if not parsed.either_day and not any(
        d <= _MONTH_DAYS[m - 1] for m in parsed.months for d in parsed.days
    ):
        raise CronError(
            f"day-of-month: {fields[2]!r} never occurs in month {fields[3]!r}", "day-of-month"
        )
    return parsed
