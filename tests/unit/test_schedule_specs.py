"""Fire times of the three spec kinds, checked against APScheduler's triggers for a year of dates,
and the daylight-saving rules on the days the clocks change in Europe/Berlin and America/New_York."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from backburner.schedules.specs import (
    AtFires,
    Fires,
    IntervalFires,
    InvalidField,
    Spec,
    check_spec,
    compile_cron,
    next_fire_times,
    wall_to_instant,
)

YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2026, 1, 1, tzinfo=UTC)
# The days the clocks change in 2025 (local dates).
DST_DAYS = {
    "Europe/Berlin": {date(2025, 3, 30), date(2025, 10, 26)},
    "America/New_York": {date(2025, 3, 9), date(2025, 11, 2)},
}


def ours(fires: Fires, start: datetime, end: datetime) -> list[datetime]:
    found, moment = [], fires.next_after(start - timedelta(microseconds=1))
    while moment is not None and moment < end:
        found.append(moment)
        moment = fires.next_after(moment)
    return found


def library(
    trigger: CronTrigger | IntervalTrigger | DateTrigger, start: datetime, end: datetime
) -> list[datetime]:
    """The trigger's fire times in its own time zone (their wall-clock readings as it made them)."""
    found, previous = [], None
    moment = trigger.get_next_fire_time(None, start)
    while moment is not None and moment < end:
        found.append(moment)
        previous = moment
        moment = trigger.get_next_fire_time(previous, previous)
    return found


def utc(moments: list[datetime]) -> list[datetime]:
    return [m.astimezone(UTC) for m in moments]


# Cron expressions with the same trigger in APScheduler's own terms (its weekdays count from Monday).
CRONS = [
    ("30 2 * * *", {"minute": "30", "hour": "2"}),
    ("0 9 * * 1-5", {"minute": "0", "hour": "9", "day_of_week": "mon-fri"}),
    ("15 */3 * * *", {"minute": "15", "hour": "*/3"}),
    ("0 0 1,15 * *", {"minute": "0", "hour": "0", "day": "1,15"}),
    ("45 23 * * 0", {"minute": "45", "hour": "23", "day_of_week": "sun"}),
    ("*/20 1-3 * * *", {"minute": "*/20", "hour": "1-3"}),
]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize(("expression", "fields"), CRONS, ids=[c[0] for c in CRONS])
def test_cron_matches_the_library_for_a_year_apart_from_the_clock_changes(
    zone: str, expression: str, fields: dict[str, str]
) -> None:
    tz = ZoneInfo(zone)
    trigger = CronTrigger(timezone=zone, **fields)
    mine = ours(compile_cron(expression, zone), YEAR_START, YEAR_END)
    theirs = library(trigger, YEAR_START, YEAR_END)
    assert len(theirs) >= 23

    def plain_days(moments: list[datetime]) -> set[datetime]:
        return {m for m in moments if m.astimezone(tz).date() not in DST_DAYS[zone]}

    # Every fire time the library finds on an ordinary day is ours, and no other ...
    assert plain_days(utc(theirs)) <= plain_days(mine)
    # ... except those that the library, stepping from its previous fire across a clock change,
    # skips (`0 0 1,15 * *` loses 1 April in Berlin); asked from just before, it finds them too.
    for extra in plain_days(mine) - plain_days(utc(theirs)):
        assert trigger.get_next_fire_time(None, extra - timedelta(microseconds=1)) == extra
    # On the days the clocks change, each local time the library matched fires exactly once.
    for day in DST_DAYS[zone]:
        walls = {m.replace(tzinfo=None) for m in theirs if m.date() == day}
        expected = sorted({wall_to_instant(wall, tz) for wall in walls})
        assert [m for m in mine if m.astimezone(tz).date() == day] == expected


@pytest.mark.parametrize(
    ("zone", "expression", "after", "expected_utc"),
    [
        # 02:30 does not exist on 30 March in Berlin: once, at 03:00 CEST, when the clocks jumped.
        ("Europe/Berlin", "30 2 * * *", "2025-03-29T12:00", ["2025-03-30T01:00", "2025-03-31T00:30"]),
        # 02:30 happens twice on 26 October in Berlin: once, the first time (CEST).
        ("Europe/Berlin", "30 2 * * *", "2025-10-25T12:00", ["2025-10-26T00:30", "2025-10-27T01:30"]),
        # Every 30 min across the skipped hour: 02:00 and 02:30 collapse into 03:00.
        (
            "Europe/Berlin",
            "*/30 * * * *",
            "2025-03-30T00:15",
            ["2025-03-30T00:30", "2025-03-30T01:00", "2025-03-30T01:30"],
        ),
        # Every 30 min across the repeated hour: 02:00 and 02:30 fire once each.
        (
            "Europe/Berlin",
            "*/30 * * * *",
            "2025-10-25T23:45",
            ["2025-10-26T00:00", "2025-10-26T00:30", "2025-10-26T02:00"],
        ),
        ("America/New_York", "30 2 * * *", "2025-03-08T12:00", ["2025-03-09T07:00", "2025-03-10T06:30"]),
        ("America/New_York", "30 1 * * *", "2025-11-01T12:00", ["2025-11-02T05:30", "2025-11-03T06:30"]),
    ],
)
def test_daylight_saving_rules(zone: str, expression: str, after: str, expected_utc: list[str]) -> None:
    fires = compile_cron(expression, zone)
    start = datetime.fromisoformat(after).replace(tzinfo=UTC)
    found = next_fire_times(fires, start, len(expected_utc))
    assert [m.strftime("%Y-%m-%dT%H:%M") for m in found] == expected_utc


def test_the_library_alone_doubles_a_repeated_time_and_shifts_a_skipped_one() -> None:
    """Why our rule exists: APScheduler 3 fires 02:30 twice in October and at 03:30 in March."""
    trigger = CronTrigger(minute="30", hour="2", timezone="Europe/Berlin")
    october = utc(
        library(trigger, datetime(2025, 10, 25, 12, tzinfo=UTC), datetime(2025, 10, 27, tzinfo=UTC))
    )
    assert len(october) == 2 and october[1] - october[0] == timedelta(hours=1)
    march = utc(library(trigger, datetime(2025, 3, 29, 12, tzinfo=UTC), datetime(2025, 3, 31, tzinfo=UTC)))
    assert march[-1] == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)  # 03:30 CEST, not 03:00


def test_cron_weekdays_and_the_either_day_rule() -> None:
    monday = datetime(2025, 6, 2, tzinfo=UTC)  # a Monday
    weekdays = next_fire_times(compile_cron("0 9 * * 1-5"), monday, 7)
    assert {m.strftime("%a") for m in weekdays} == {"Mon", "Tue", "Wed", "Thu", "Fri"}
    assert [m.strftime("%a") for m in next_fire_times(compile_cron("0 9 * * 0"), monday, 2)] == ["Sun", "Sun"]
    assert [m.strftime("%a") for m in next_fire_times(compile_cron("0 9 * * 7"), monday, 1)] == ["Sun"]
    assert [m.strftime("%a") for m in next_fire_times(compile_cron("0 9 * * fri-sun"), monday, 3)] == [
        "Fri",
        "Sat",
        "Sun",
    ]
    # Both day fields restricted: the 13th of any month, and every Friday (cron's rule, not "Friday 13th").
    found = next_fire_times(compile_cron("0 0 13 * 5"), monday, 10)
    assert any(m.day == 13 and m.strftime("%a") != "Fri" for m in found)
    assert any(m.strftime("%a") == "Fri" and m.day != 13 for m in found)
    assert next_fire_times(compile_cron("@daily"), monday, 1) == [monday + timedelta(days=1)]


def test_interval_matches_the_library_for_a_year() -> None:
    anchor = datetime(2025, 1, 1, 0, 7, 3, tzinfo=UTC)
    interval_s = 7 * 3600 + 13 * 60 + 0.25
    mine = ours(IntervalFires(anchor, int(interval_s * 1_000_000)), YEAR_START, YEAR_END)
    theirs = utc(
        library(IntervalTrigger(seconds=interval_s, start_date=anchor, timezone=UTC), YEAR_START, YEAR_END)
    )
    assert len(mine) > 1000 and mine == theirs


def test_interval_without_start_fires_one_interval_after_creation() -> None:
    created = datetime(2025, 1, 1, 12, tzinfo=UTC)
    spec = Spec(kind="interval", interval_seconds=30)
    fires = spec.fires(created)
    assert next_fire_times(fires, created, 2) == [
        created + timedelta(seconds=30),
        created + timedelta(seconds=60),
    ]
    bounded = Spec(kind="interval", interval_seconds=30, start_at=created + timedelta(hours=1))
    assert next_fire_times(bounded.fires(created), created, 1) == [created + timedelta(hours=1)]


def test_at_fires_once_like_the_library() -> None:
    moment = datetime(2025, 12, 8, 8, tzinfo=UTC)
    assert ours(AtFires(moment), YEAR_START, YEAR_END) == utc(
        library(DateTrigger(moment), YEAR_START, YEAR_END)
    )
    assert AtFires(moment).next_after(moment) is None


def test_bounds_limit_every_kind() -> None:
    start, end = datetime(2025, 5, 1, tzinfo=UTC), datetime(2025, 5, 3, 12, tzinfo=UTC)
    cron = compile_cron("0 12 * * *", "UTC", start, end)
    assert ours(cron, YEAR_START, YEAR_END) == [
        start + timedelta(hours=12),
        start + timedelta(days=1, hours=12),
        end,
    ]
    interval = IntervalFires(start, 86_400_000_000, end_at=end)
    assert ours(interval, YEAR_START, YEAR_END) == [
        start,
        start + timedelta(days=1),
        start + timedelta(days=2),
    ]


NOW = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        (Spec(kind="cron", cron="0 9 * *"), "cron", "4 fields, not five"),
        (Spec(kind="cron", cron="61 * * * *"), "cron", "not a valid cron expression"),
        (Spec(kind="cron", cron="0 0 30 2 *"), "cron", "never fires"),
        (Spec(kind="cron", cron="@reboot"), "cron", "unknown macro"),
        (Spec(kind="cron", cron="0 9 * * *", timezone="Mars/Olympus"), "timezone", "IANA name"),
        (Spec(kind="cron", cron="0 9 * * *", timezone="../../etc/passwd"), "timezone", "IANA name"),
        (Spec(kind="interval", interval_seconds=0), "interval_seconds", "between 1 and"),
        (Spec(kind="interval", interval_seconds=float("nan")), "interval_seconds", "between 1 and"),
        (Spec(kind="at", at=NOW - timedelta(seconds=1)), "at", "in the past"),
        (
            Spec(
                kind="interval",
                interval_seconds=60,
                start_at=NOW + timedelta(days=2),
                end_at=NOW + timedelta(days=1),
            ),
            "end_at",
            "must be after start_at",
        ),
        (Spec(kind="interval", interval_seconds=60, end_at=NOW - timedelta(days=1)), "end_at", "in the past"),
        (Spec(kind="at", at=datetime(9500, 1, 1, tzinfo=UTC)), "at", "between 1970 and 9000"),
    ],
)
def test_bad_specs_name_the_field_and_what_is_allowed(spec: Spec, field: str, says: str) -> None:
    with pytest.raises(InvalidField) as caught:
        check_spec(spec, NOW)
    assert caught.value.field == field and says in caught.value.message, caught.value.message
