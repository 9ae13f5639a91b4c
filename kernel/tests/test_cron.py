"""Standard cron, parsed once: what crontab(5) allows is accepted, and every refusal names its field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from levqor_kernel.cron import CronError, parse_cron
from levqor_kernel.pipeline import check_cron

SUN, MON, TUE, WED, THU, FRI, SAT = range(7)


@pytest.mark.parametrize(
    ("expr", "weekdays"),
    [
        ("0 9 * * 1-5", {MON, TUE, WED, THU, FRI}),
        ("0 9 * * MON-FRI", {MON, TUE, WED, THU, FRI}),
        ("0 9 * * mon-Fri", {MON, TUE, WED, THU, FRI}),
        ("0 9 * * 0", {SUN}),
        ("0 9 * * 7", {SUN}),
        ("0 9 * * SUN", {SUN}),
        ("0 9 * * 5-7", {FRI, SAT, SUN}),
        ("0 9 * * sat,sun", {SAT, SUN}),
        ("0 9 * * */2", {SUN, TUE, THU, SAT}),
        ("0 9 * * 1-7/3", {MON, THU, SUN}),
        ("@weekly", {SUN}),
    ],
)
def test_day_of_week_counts_sunday_as_0_and_7(expr, weekdays):
    assert parse_cron(expr).weekdays == weekdays


def test_fields_lists_ranges_steps_and_names():
    e = parse_cron("*/20 9-17/4 1,15,31 JAN,jul-Sep *")
    assert e.minutes == {0, 20, 40}
    assert e.hours == {9, 13, 17}
    assert e.days == {1, 15, 31}
    assert e.months == {1, 7, 8, 9}
    assert e.weekdays == set(range(7))
    assert parse_cron("5/20 * * * *").minutes == {5, 25, 45}  # N/S reads as N-59/S


@pytest.mark.parametrize(
    ("macro", "fields"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_macros_mean_their_five_fields(macro, fields):
    a, b = parse_cron(macro), parse_cron(fields)
    assert (a.minutes, a.hours, a.days, a.months, a.weekdays) == (
        b.minutes, b.hours, b.days, b.months, b.weekdays
    )
    assert (a.either_day, a.wildcard_time) == (b.either_day, b.wildcard_time)


def test_either_day_only_when_both_day_fields_are_restricted():
    # crontab(5): restricted means "does not begin with *", so */2 counts as unrestricted
    assert parse_cron("0 0 13 * 5").either_day
    assert parse_cron("0 0 1 * MON").either_day
    assert not parse_cron("0 0 * * 5").either_day
    assert not parse_cron("0 0 13 * *").either_day
    assert not parse_cron("0 0 */2 * 1").either_day


def test_wildcard_time_is_a_star_in_minute_or_hour():
    assert parse_cron("*/15 2 * * *").wildcard_time
    assert parse_cron("30 * * * *").wildcard_time
    assert parse_cron("@hourly").wildcard_time
    assert not parse_cron("30 2 * * *").wildcard_time
    assert not parse_cron("0,30 1-3 * * *").wildcard_time
    assert not parse_cron("@daily").wildcard_time


@pytest.mark.parametrize(
    ("expr", "field", "words"),
    [
        ("0 9 * * 8", "day-of-week", "8 is out of range"),
        ("60 * * * *", "minute", "60 is out of range"),
        ("0 24 * * *", "hour", "24 is out of range"),
        ("0 0 0 * *", "day-of-month", "0 is out of range"),
        ("0 0 32 * *", "day-of-month", "32"),
        ("0 0 1 13 *", "month", "13 is out of range"),
        ("0 0 * * MONDAY", "day-of-week", "'MONDAY'"),
        ("0 0 1 JANUARY *", "month", "'JANUARY'"),
        ("0 0 * * 5-1", "day-of-week", "backwards"),
        ("0 0 * * SAT-SUN", "day-of-week", "backwards"),
        ("*/0 * * * *", "minute", "step"),
        ("*/x * * * *", "minute", "step"),
        ("1,,2 * * * *", "minute", "empty"),
        ("0 0 L * *", "day-of-month", "'L'"),
        ("0 0 15W * *", "day-of-month", "'15W'"),
        ("0 0 * * FRI#2", "day-of-week", "'FRI#2'"),
        ("0 0 ? * *", "day-of-month", "'?'"),
        ("0 0 last * *", "day-of-month", "'last'"),
        ("0 0 30 2 *", "day-of-month", "never occurs"),
        ("0 0 31 APR,jun *", "day-of-month", "never occurs"),
        ("* * * * $(rm)", "day-of-week", "'$(rm)'"),
        ("-1 * * * *", "minute", "''"),
        ("0 ² * * *", "hour", "'²'"),
    ],
)
def test_refusals_name_the_field(expr, field, words):
    with pytest.raises(CronError) as ei:
        parse_cron(expr)
    assert ei.value.field == field
    assert str(ei.value).startswith(f"{field}: ") and words in str(ei.value)
    assert check_cron(expr) == str(ei.value)


@pytest.mark.parametrize(
    "expr", ["", "* * * *", "* * * * * *", "0 0 * * * 2026", "@sometimes", "@reboot", "@"]
)
def test_refusals_of_the_whole_expression(expr):
    with pytest.raises(CronError) as ei:
        parse_cron(expr)
    assert ei.value.field is None
    assert "5 fields" in str(ei.value) or "@daily" in str(ei.value)


def test_a_day_that_only_a_weekday_can_supply_is_fine():
    # Feb 30 never occurs, but with a restricted day-of-week the Fridays of February still match
    assert parse_cron("0 0 30 2 FRI").either_day
    assert parse_cron("0 0 29 2 *").days == {29}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789*/,- @MONFRIjanSUNWL#?²\t", max_size=40) | st.text(max_size=40))
def test_any_text_is_parsed_or_refused_with_a_cron_error(text):
    try:
        parsed = parse_cron(text)
    except CronError as e:
        assert str(e)
    else:
        assert parsed.minutes and parsed.hours and parsed.days and parsed.months
        assert parsed.weekdays and parsed.weekdays <= set(range(7))
