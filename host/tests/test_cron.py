"""Cron schedules fire as crontab(5) and cron(8) say, in the scheduler and in the preview alike.

Every expected time below was written by hand from the man pages and a calendar, not computed:
2026-12-04 is a Friday; 2027-01-01 a Friday; America/New_York springs forward on 2026-03-08
(02:00 EST -> 03:00 EDT) and falls back on 2026-11-01 (02:00 EDT -> 01:00 EST); Europe/London
springs forward on 2026-03-29 (01:00 GMT -> 02:00 BST) and falls back on 2026-10-25
(02:00 BST -> 01:00 GMT). cron(8): a job at fixed times whose time is skipped runs at once
after the change, and runs once in a repeated hour; a job with ``*`` in its minute or hour
runs normally (nothing in a skipped hour, both passes of a repeated one).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from e2e_support import ROOT, LiveServer, make_app
from levqor_host.cron import next_fire_times
from levqor_host.workers.scheduler import SchedulerService

# scripts/test-backends runs this file again on PostgreSQL
pytestmark = pytest.mark.backends

NY, LDN = "America/New_York", "Europe/London"

# (expression, time zone, fire times at or after, the next fire times)
TABLE = [
    # day-of-week: 0 and 7 are Sunday, 1-5 Monday to Friday (from Friday 2026-12-04 09:30)
    ("0 9 * * 1-5", "UTC", "2026-12-04T09:30:00+00:00", [
        "2026-12-07T09:00:00+00:00", "2026-12-08T09:00:00+00:00", "2026-12-09T09:00:00+00:00",
        "2026-12-10T09:00:00+00:00", "2026-12-11T09:00:00+00:00", "2026-12-14T09:00:00+00:00"]),
    ("0 9 * * MON-FRI", "UTC", "2026-12-04T09:30:00+00:00", [
        "2026-12-07T09:00:00+00:00", "2026-12-08T09:00:00+00:00", "2026-12-09T09:00:00+00:00",
        "2026-12-10T09:00:00+00:00", "2026-12-11T09:00:00+00:00", "2026-12-14T09:00:00+00:00"]),
    ("0 9 * * 0", "UTC", "2026-12-04T00:00:00+00:00",
     ["2026-12-06T09:00:00+00:00", "2026-12-13T09:00:00+00:00"]),
    ("0 9 * * 7", "UTC", "2026-12-04T00:00:00+00:00",
     ["2026-12-06T09:00:00+00:00", "2026-12-13T09:00:00+00:00"]),
    ("0 9 * * sun", "UTC", "2026-12-04T00:00:00+00:00",
     ["2026-12-06T09:00:00+00:00", "2026-12-13T09:00:00+00:00"]),
    ("0 9 * * 5-7", "UTC", "2026-12-04T00:00:00+00:00", [
        "2026-12-04T09:00:00+00:00", "2026-12-05T09:00:00+00:00", "2026-12-06T09:00:00+00:00",
        "2026-12-11T09:00:00+00:00"]),
    ("0 9 * * 1", "UTC", "2026-12-04T00:00:00+00:00",
     ["2026-12-07T09:00:00+00:00", "2026-12-14T09:00:00+00:00"]),
    ("0 9 * * 6", "UTC", "2026-12-04T00:00:00+00:00",
     ["2026-12-05T09:00:00+00:00", "2026-12-12T09:00:00+00:00"]),
    # at or after: a time that is itself a fire time is the first one
    ("0 9 * * *", "UTC", "2026-12-04T09:00:00+00:00",
     ["2026-12-04T09:00:00+00:00", "2026-12-05T09:00:00+00:00"]),
    # the macros
    ("@weekly", "UTC", "2026-12-04T10:30:00+00:00",
     ["2026-12-06T00:00:00+00:00", "2026-12-13T00:00:00+00:00"]),
    ("@daily", "UTC", "2026-12-04T10:30:00+00:00",
     ["2026-12-05T00:00:00+00:00", "2026-12-06T00:00:00+00:00"]),
    ("@midnight", "UTC", "2026-12-04T10:30:00+00:00",
     ["2026-12-05T00:00:00+00:00", "2026-12-06T00:00:00+00:00"]),
    ("@hourly", "UTC", "2026-12-04T10:30:00+00:00",
     ["2026-12-04T11:00:00+00:00", "2026-12-04T12:00:00+00:00"]),
    ("@monthly", "UTC", "2026-12-04T10:30:00+00:00",
     ["2027-01-01T00:00:00+00:00", "2027-02-01T00:00:00+00:00"]),
    ("@yearly", "UTC", "2026-12-04T10:30:00+00:00",
     ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]),
    ("@annually", "UTC", "2026-12-04T10:30:00+00:00",
     ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]),
    # both day fields restricted: either may match (every Friday and every 13th)
    ("0 12 13 * 5", "UTC", "2026-12-04T10:30:00+00:00", [
        "2026-12-04T12:00:00+00:00", "2026-12-11T12:00:00+00:00", "2026-12-13T12:00:00+00:00",
        "2026-12-18T12:00:00+00:00"]),
    ("0 0 1 * MON", "UTC", "2026-12-04T10:30:00+00:00", [
        "2026-12-07T00:00:00+00:00", "2026-12-14T00:00:00+00:00", "2026-12-21T00:00:00+00:00",
        "2026-12-28T00:00:00+00:00", "2027-01-01T00:00:00+00:00", "2027-01-04T00:00:00+00:00"]),
    # day-of-month begins with *: not restricted, so both must match (odd days that are Mondays)
    ("0 0 */2 * 1", "UTC", "2026-12-04T10:30:00+00:00", [
        "2026-12-07T00:00:00+00:00", "2026-12-21T00:00:00+00:00", "2027-01-11T00:00:00+00:00"]),
    # lists, ranges, steps, month names, leap days
    ("*/20 9-10 * * 1-5", "UTC", "2026-12-04T10:50:00+00:00", [
        "2026-12-07T09:00:00+00:00", "2026-12-07T09:20:00+00:00", "2026-12-07T09:40:00+00:00",
        "2026-12-07T10:00:00+00:00"]),
    ("5/20 * * * *", "UTC", "2026-12-04T10:30:00+00:00", [
        "2026-12-04T10:45:00+00:00", "2026-12-04T11:05:00+00:00", "2026-12-04T11:25:00+00:00"]),
    ("0 8 1 JAN,jul *", "UTC", "2026-12-04T10:30:00+00:00",
     ["2027-01-01T08:00:00+00:00", "2027-07-01T08:00:00+00:00"]),
    ("0 0 29 2 *", "UTC", "2026-12-04T10:30:00+00:00",
     ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]),
    # in a time zone: the wall clock there
    ("0 9 * * 1-5", NY, "2026-12-04T15:00:00+00:00",
     ["2026-12-07T09:00:00-05:00", "2026-12-08T09:00:00-05:00"]),
    ("0 9 * * *", NY, "2026-03-07T00:00:00-05:00",
     ["2026-03-07T09:00:00-05:00", "2026-03-08T09:00:00-04:00"]),
    # New York springs forward: 02:00-02:59 does not exist on 2026-03-08
    ("30 2 * * *", NY, "2026-03-07T12:00:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    ("15,45 2 * * *", NY, "2026-03-07T12:00:00-05:00", [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:15:00-04:00", "2026-03-09T02:45:00-04:00"]),
    ("0 2 * * 0", NY, "2026-03-01T03:00:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-15T02:00:00-04:00"]),
    ("30 * * * *", NY, "2026-03-08T00:00:00-05:00", [
        "2026-03-08T00:30:00-05:00", "2026-03-08T01:30:00-05:00", "2026-03-08T03:30:00-04:00"]),
    ("*/30 2 * * *", NY, "2026-03-08T00:00:00-05:00",
     ["2026-03-09T02:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    # New York falls back: 01:00-01:59 happens twice on 2026-11-01
    ("30 1 * * *", NY, "2026-10-31T12:00:00-04:00",
     ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    ("30 1 * * *", NY, "2026-11-01T01:10:00-05:00", ["2026-11-02T01:30:00-05:00"]),
    ("30 * * * *", NY, "2026-11-01T00:00:00-04:00", [
        "2026-11-01T00:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:30:00-05:00"]),
    ("*/30 1 * * *", NY, "2026-11-01T00:00:00-04:00", [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00", "2026-11-02T01:00:00-05:00"]),
    # London: 01:00-01:59 does not exist on 2026-03-29 and happens twice on 2026-10-25
    ("30 1 * * *", LDN, "2026-03-28T12:00:00+00:00",
     ["2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]),
    ("30 1 * * *", LDN, "2026-10-24T12:00:00+01:00",
     ["2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"]),
    ("0 * * * *", LDN, "2026-10-25T00:30:00+01:00", [
        "2026-10-25T01:00:00+01:00", "2026-10-25T01:00:00+00:00", "2026-10-25T02:00:00+00:00"]),
    ("0 9 * * MON-FRI", LDN, "2026-10-23T10:00:00+01:00",
     ["2026-10-26T09:00:00+00:00", "2026-10-27T09:00:00+00:00"]),
]

INVALID = [
    ("0 9 * * 8", "day-of-week"),
    ("61 * * * *", "minute"),
    ("0 24 * * *", "hour"),
    ("0 0 32 * *", "day-of-month"),
    ("0 0 1 13 *", "month"),
    ("0 0 * * MONDAY", "day-of-week"),
    ("0 0 L * ?", "day-of-month"),
    ("0 0 30 2 *", "day-of-month"),
]


def _id(row):
    return f"{row[0]}@{row[1]}@{row[2]}"


@pytest.mark.parametrize("row", TABLE, ids=[_id(r) for r in TABLE])
def test_next_fire_times_follow_the_man_pages(row):
    expr, tz, after, expected = row
    assert next_fire_times(expr, tz, len(expected), datetime.fromisoformat(after)) == expected


def test_the_examples_in_the_docs_hold():
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text.split("<!-- cron-examples -->")[1].split("<!-- /cron-examples -->")[0]
    rows = table.strip().splitlines()[2:]
    assert len(rows) >= 5
    for line in rows:
        expr, tz, after, times = (c.strip() for c in line.strip("|").split("|"))
        expected = [t.strip() for t in times.split(",")]
        after = re.sub(r" \(.*\)$", "", after)
        got = next_fire_times(expr.strip("`"), tz, len(expected), datetime.fromisoformat(after))
        assert got == expected, line


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = LiveServer(make_app(tmp_path_factory.mktemp("cron"), start_workers=False))
    yield s
    s.stop()


def test_the_preview_route_shows_the_table(srv):
    _, key = srv.user_with_key("preview@example.com")
    c = srv.client(key)
    for expr, tz, after, expected in TABLE:
        r = c.get("/api/v1/schedule/preview",
                  params={"cron": expr, "timezone": tz, "after": after, "count": len(expected)})
        assert r.status_code == 200, (expr, r.text)
        assert r.json() == {"cron": expr, "timezone": tz, "next": expected}
    r = c.get("/api/v1/schedule/preview", params={"cron": "@daily", "after": "2026-12-04T10:30"})
    assert r.status_code == 400 and "offset" in r.json()["error"]["message"]
    r = c.get("/api/v1/schedule/preview", params={"cron": "@daily", "after": "tomorrow"})
    assert r.status_code == 400
    r = c.get("/api/v1/schedule/preview", params={"cron": "@yearly", "after": "9999-12-31T00:00Z"})
    assert r.status_code == 400


def test_invalid_expressions_are_refused_naming_the_field(srv):
    _, key = srv.user_with_key("invalid@example.com")
    c = srv.client(key)
    for expr, field in INVALID:
        r = c.get("/api/v1/schedule/preview", params={"cron": expr})
        assert r.status_code == 422, (expr, r.text)
        problem = r.json()["error"]["details"]["problems"][0]
        assert problem["pointer"] == "/trigger/cron"
        assert problem["message"].startswith(f"{field}: "), problem
        doc = {"levqor": 1, "trigger": {"type": "schedule", "cron": expr},
               "steps": [{"id": "t", "connector": "core", "action": "transform",
                          "payload": {"value": 1}}]}
        r = c.post("/api/v1/pipelines", json={"name": "bad", "pipeline": doc})
        assert r.status_code == 422, (expr, r.text)
        problems = r.json()["error"]["details"]["problems"]
        assert [p["pointer"] for p in problems] == ["/trigger/cron"]
        assert problems[0]["message"].startswith(f"{field}: ")
    assert c.get("/api/v1/pipelines").json()["items"] == []  # nothing was half-written


def _doc(cron: str, tz: str) -> dict:
    return {"levqor": 1, "trigger": {"type": "schedule", "cron": cron, "timezone": tz},
            "steps": [{"id": "t", "connector": "core", "action": "transform",
                       "payload": {"value": "{{ trigger.scheduled_at }}"}}]}


def test_the_scheduler_fires_on_the_cron_weekday(tmp_path):
    """A real scheduler, a real fire at the next minute: ``* * * * D`` runs on day D of cron's
    week (0 = Sunday), and a restricted day-of-month or day-of-week is enough on its own."""
    tz = NY
    now = datetime.now(UTC)
    boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if (boundary - now).total_seconds() < 8:  # leave the scheduler time to sync its jobs
        boundary += timedelta(minutes=1)
    local = boundary.astimezone(ZoneInfo(tz))
    today = local.isoweekday() % 7  # cron's numbering: Sunday 0, Monday 1 ... Saturday 6
    tomorrow = (today + 1) % 7
    name = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")[today]
    other_day = 1 if local.day > 1 else 2
    app = make_app(tmp_path, start_workers=False)
    st = app.extensions["levqor"]
    user = st.store.users.create("cron@example.com")
    fires = {
        "today": f"* * * * {today}",
        "by name": f"* * * * {name}",
        "either day": f"* * {local.day} * {tomorrow}",
        "weekdays": "0 9 * * 1-5",
    }
    quiet = {"tomorrow": f"* * * * {tomorrow}", "neither day": f"* * {other_day} * {tomorrow}"}
    ids = {label: st.store.pipelines.create(user["id"], label, _doc(cron, tz))["id"]
           for label, cron in {**fires, **quiet}.items()}
    s = SchedulerService(st.runs, ttl=5.0, sync_interval=0.2)
    s.start()
    try:
        deadline = time.monotonic() + 10
        while len(s.sched.get_jobs()) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        jobs = {j.id: j for j in s.sched.get_jobs()}
        assert set(ids.values()) <= set(jobs)
        # Monday to Friday at 09:00 New York time: the next such minute, found by walking days
        z = ZoneInfo(tz)
        day = datetime.now(z).replace(hour=9, minute=0, second=0, microsecond=0)
        while day <= datetime.now(z) or day.isoweekday() > 5:
            day = (day + timedelta(days=1)).replace(hour=9)
        assert jobs[ids["weekdays"]].next_run_time == day

        def runs(label):
            return st.store.runs.list(user["id"], pipeline_id=ids[label])[0]

        wait = (boundary - datetime.now(UTC)).total_seconds() + 20
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not all(
            runs(label) for label in ("today", "by name", "either day")
        ):
            time.sleep(0.2)
        for label in ("today", "by name", "either day"):
            got = runs(label)
            assert len(got) == 1 and got[0]["trigger"] == "schedule", (label, fires[label])
        time.sleep(1)
        for label in quiet:
            assert runs(label) == [], (label, quiet[label])
    finally:
        s.stop()
        st.store.close()


# ------------------------------------------------------------------ property: any expression
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _item(lo: int, hi: int):
    value = st.integers(lo, hi)
    single = value.map(str)
    span = st.tuples(value, value).map(lambda ab: f"{min(ab)}-{max(ab)}")
    stepped = st.tuples(st.one_of(st.just("*"), span), st.integers(1, hi - lo + 1)).map(
        lambda s: f"{s[0]}/{s[1]}"
    )
    return st.one_of(single, span, stepped)


def _field(lo: int, hi: int):
    return st.one_of(st.just("*"), st.lists(_item(lo, hi), min_size=1, max_size=3).map(",".join))


def _values(text: str, lo: int, hi: int) -> set[int]:
    """crontab(5) read literally, independent of the parser under test."""
    out: set[int] = set()
    for item in text.split(","):
        span, _, step = item.partition("/")
        a, b = (lo, hi) if span == "*" else map(int, span.split("-")) if "-" in span else (
            int(span), int(span))
        out.update(range(a, b + 1, int(step or 1)))
    return out


@settings(max_examples=100, deadline=None)
@given(
    minute=_field(0, 59), hour=_field(0, 23), dom=_field(1, 31), month=_field(1, 12),
    dow=_field(0, 7), start=st.datetimes(datetime(2026, 1, 1), datetime(2030, 1, 1)),
)
def test_every_fire_time_matches_the_fields_and_none_is_missed(minute, hour, dom, month, dow, start):
    expr = f"{minute} {hour} {dom} {month} {dow}"
    mins, hrs = _values(minute, 0, 59), _values(hour, 0, 23)
    days, months = _values(dom, 1, 31), _values(month, 1, 12)
    weekdays = {d % 7 for d in _values(dow, 0, 7)}
    either = not dom.startswith("*") and not dow.startswith("*")

    def matches(t: datetime) -> bool:
        day_ok = t.day in days, t.isoweekday() % 7 in weekdays
        return (t.minute in mins and t.hour in hrs and t.month in months
                and (any(day_ok) if either else all(day_ok)))

    start = start.replace(second=0, microsecond=0, tzinfo=UTC)
    try:
        got = next_fire_times(expr, "UTC", 3, start)
    except ValueError as e:  # only a date that never occurs is refused
        assert "never occurs" in str(e)
        return
    assert got, expr
    times = [datetime.fromisoformat(t) for t in got]
    assert all(matches(t) for t in times), (expr, got)
    assert times == sorted(set(times))
    # no matching minute before the first fire time (looked for up to two days ahead)
    t = start
    while t < min(times[0], start + timedelta(days=2)):
        assert not matches(t), (expr, t, got)
        t += timedelta(minutes=1)


def test_the_backup_schedule_is_read_as_standard_cron(tmp_path):
    from levqor_host.config import Config

    assert Config.from_env({"LEVQOR_BACKUP_CRON": "0 3 * * 7"}, data_dir=tmp_path).backup.cron
    assert Config.from_env({"LEVQOR_BACKUP_CRON": "off"}, data_dir=tmp_path).backup.cron == "off"
    with pytest.raises(ValueError, match="LEVQOR_BACKUP_CRON.*day-of-week: 8 is out of range"):
        Config.from_env({"LEVQOR_BACKUP_CRON": "0 3 * * 8"}, data_dir=tmp_path)
