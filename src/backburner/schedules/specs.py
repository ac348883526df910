"""When a schedule fires: cron (five fields, in an IANA time zone), a fixed interval, or one moment.

Pure functions of their inputs. Cron fields are matched by APScheduler's `CronTrigger`, run over
local wall-clock time; each wall-clock match is then placed on the time line by one rule:

- a local time that does not exist (the hour skipped when clocks go forward) fires once, at the
  next valid moment: the instant the clocks jumped;
- a local time that occurs twice (the hour repeated when clocks go back) fires once, at its first
  occurrence.

(APScheduler 3 alone fires a repeated time twice and moves a skipped one by the size of the
jump.) Cron's weekday numbers are kept (0 and 7 are Sunday; APScheduler 3 counts from Monday), and
so is its rule that a restricted day of month and a restricted day of week match either one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

SpecKind = Literal["cron", "interval", "at"]
MICROSECOND = timedelta(microseconds=1)
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 366 * 86_400.0
MAX_CRON_CHARS = 200
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
PROBE_START = datetime(2000, 1, 1, tzinfo=UTC)
PROBE_SPAN = timedelta(days=29 * 366)

WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_HELP = (
    "five fields: minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5' "
    "(or @hourly, @daily, @weekly, @monthly, @yearly)"
)


class InvalidField(ValueError):
    """Input that cannot be used; `field` names the field at fault, the message what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Fires(Protocol):
    """The fire times of one schedule."""

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after `moment`, or None when there is none."""
        ...

    def advance(self, start: datetime, before: datetime, keep: int, budget: int) -> Advance:
        """Walk the fire times from `start` (a fire time) up to `before` (excluded)."""
        ...


@dataclass(frozen=True)
class Advance:
    """Fire times walked over from a start up to a bound.

    `kept` holds the last `keep` of them (oldest first); `passed` counts the others; `next` is the
    first fire time not walked over. When the budget ran out first (`complete` False), `next` is
    rewound to the first kept fire time, so that a later walk from it loses nothing.
    """

    passed: int
    kept: tuple[datetime, ...]
    next: datetime | None
    complete: bool
    steps: int


def walk(fires: Fires, start: datetime, before: datetime, keep: int, budget: int) -> Advance:
    """`Fires.advance` by stepping through the fire times one by one, at most `budget` of them."""
    kept: deque[datetime] = deque(maxlen=max(keep, 0) or None)
    passed = steps = 0
    moment: datetime | None = start
    while moment is not None and moment < before:
        if steps >= budget:
            rewound = kept[0] if kept else moment
            return Advance(passed, (), rewound, complete=False, steps=steps)
        if keep <= 0:
            passed += 1
        else:
            if len(kept) == keep:
                passed += 1
            kept.append(moment)
        moment = fires.next_after(moment)
        steps += 1
    return Advance(passed, tuple(kept), moment, complete=True, steps=steps)


def _zone(name: str) -> tzinfo:
    if name == "UTC":
        return UTC
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise InvalidField(
            "timezone", f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin'"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidField(
            "timezone", f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin'"
        ) from None


def time_zone(name: str) -> tzinfo:
    """The IANA time zone `name`; `InvalidField` naming `timezone` when there is none."""
    return _zone(name)


# --- cron -------------------------------------------------------------------------------------


def _weekday(token: str) -> int:
    lowered = token.lower()
    if lowered in WEEKDAYS:
        return WEEKDAYS.index(lowered)
    if lowered.isdigit() and int(lowered) <= 7:
        return int(lowered) % 7
    raise ValueError(f"day of week {token!r} is not 0-7 or sun-sat")


def _weekdays(field: str) -> set[int]:
    """The days (0 = Sunday) a cron day-of-week field names."""
    days: set[int] = set()
    for item in field.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"step {step_text!r} in day of week {item!r} is not a positive number")
            step = int(step_text)
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            low, _, high = base.partition("-")
            first, last = _weekday(low), _weekday(high)
            if high.lower() in ("7", "sun"):
                last = 7  # `5-7` and `fri-sun` run Friday to Sunday
            if first > last:
                raise ValueError(f"range {base!r} in day of week runs backwards")
        else:
            first = _weekday(base)
            last = 6 if slash else first
        days.update(day % 7 for day in range(first, last + 1, step))
    return days


def _apscheduler_weekdays(field: str) -> str:
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # APScheduler's order
    days = _weekdays(field)
    return ",".join(name for name in names if WEEKDAYS.index(name) in days)


@dataclass(frozen=True)
class CronFires:
    """Cron fire times; the triggers match local wall-clock time, written as UTC."""

    expression: str
    zone: tzinfo
    triggers: tuple[CronTrigger, ...]
    start_at: datetime | None = None
    end_at: datetime | None = None

    def next_after(self, moment: datetime) -> datetime | None:
        if self.start_at is not None and moment < self.start_at:
            moment = self.start_at - MICROSECOND
        wall = moment.astimezone(self.zone).replace(tzinfo=UTC)
        while True:
            found = [t.get_next_fire_time(None, wall + MICROSECOND) for t in self.triggers]
            candidates = [f for f in found if f is not None]
            if not candidates:
                return None
            wall = min(candidates)
            instant = wall_to_instant(wall.replace(tzinfo=None), self.zone)
            if instant > moment:
                return instant if self.end_at is None or instant <= self.end_at else None

    def advance(self, start: datetime, before: datetime, keep: int, budget: int) -> Advance:
        return walk(self, start, before, keep, budget)


def compile_cron(
    expression: str, timezone: str = "UTC", start_at: datetime | None = None, end_at: datetime | None = None
) -> CronFires:
    """Check and compile a five-field cron expression; `InvalidField` names `cron` or `timezone`."""
    zone = _zone(timezone)
    text = " ".join(expression.split())
    if not text or len(text) > MAX_CRON_CHARS:
        raise InvalidField("cron", f"an empty or overlong cron expression; {CRON_HELP}")
    text = MACROS.get(text.lower(), text)
    if text.startswith("@"):
        raise InvalidField("cron", f"unknown macro {text!r}; {CRON_HELP}")
    fields = text.split(" ")
    if len(fields) != 5:
        raise InvalidField("cron", f"{expression!r} has {len(fields)} fields, not five; {CRON_HELP}")
    minute, hour, day, month, weekday = fields
    try:
        weekdays = _apscheduler_weekdays(weekday) if weekday != "*" else "*"

        # Cron's rule: with both day fields restricted, a day matching either one fires.
        if not day.startswith("*") and not weekday.startswith("*"):
            day_fields = [(day, "*"), ("*", weekdays)]
        else:
            day_fields = [(day, weekdays)]

        def trigger(day_field: str, weekday_field: str, end: datetime | None = None) -> CronTrigger:
            return CronTrigger(
                minute=minute,
                hour=hour,
                day=day_field,
                month=month,
                day_of_week=weekday_field,
                timezone=UTC,
                end_date=end,
            )

        triggers = tuple(trigger(d, w) for d, w in day_fields)
        # A date that never comes (30 February) would make the library search up to the year
        # 9999; a bounded search finds every date that comes at all (weekdays repeat in 28 years).
        probes = [trigger(d, w, PROBE_START + PROBE_SPAN) for d, w in day_fields]
    except ValueError as exc:
        raise InvalidField(
            "cron", f"{expression!r} is not a valid cron expression ({exc}); {CRON_HELP}"
        ) from None
    if all(p.get_next_fire_time(None, PROBE_START) is None for p in probes):
        raise InvalidField("cron", f"{expression!r} never fires (no such date); {CRON_HELP}")
    return CronFires(text, zone, triggers, start_at, end_at)


def wall_to_instant(wall: datetime, zone: tzinfo) -> datetime:
    """The UTC instant of a naive local time: its first occurrence, or the end of the gap it is in."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # A skipped local time: the clocks jumped at an instant between these two readings.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first
    if low > high:
        low, high = high, low
    offset_after = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) // 2
        middle = middle.replace(microsecond=0)
        if middle <= low:
            break
        if middle.astimezone(zone).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return high


# --- interval and one moment ------------------------------------------------------------------


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class IntervalFires:
    """`anchor + k * interval` for k >= 0 (the anchor is `start_at`, or the creation time)."""

    anchor: datetime
    interval_us: int
    end_at: datetime | None = None
    skip_anchor: bool = False  # without `start_at` the first fire is one interval after creation

    def _at(self, k: int) -> datetime | None:
        moment = self.anchor + timedelta(microseconds=k * self.interval_us)
        return moment if self.end_at is None or moment <= self.end_at else None

    def _first_index(self) -> int:
        return 1 if self.skip_anchor else 0

    def _index_at_or_after(self, moment: datetime) -> int:
        offset = _micros(moment - self.anchor)
        return max(self._first_index(), -(-offset // self.interval_us))

    def next_after(self, moment: datetime) -> datetime | None:
        offset = _micros(moment - self.anchor)
        return self._at(max(self._first_index(), offset // self.interval_us + 1))

    def advance(self, start: datetime, before: datetime, keep: int, budget: int) -> Advance:
        first = self._index_at_or_after(start)
        stop = max(first, self._index_at_or_after(before))  # fires first .. stop-1 are < before
        if self.end_at is not None:
            stop = min(stop, max(first, self._index_at_or_after(self.end_at + MICROSECOND)))
        count = stop - first
        kept_count = min(max(keep, 0), count)
        kept = tuple(moment for k in range(stop - kept_count, stop) if (moment := self._at(k)) is not None)
        return Advance(count - kept_count, kept, self._at(stop), complete=True, steps=1)


@dataclass(frozen=True)
class AtFires:
    at: datetime

    def next_after(self, moment: datetime) -> datetime | None:
        return self.at if self.at > moment else None

    def advance(self, start: datetime, before: datetime, keep: int, budget: int) -> Advance:
        return walk(self, start, before, keep, budget)


# --- the spec of a schedule -------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What a schedule stores about its timing."""

    kind: SpecKind
    cron: str | None = None
    timezone: str = "UTC"
    interval_seconds: float | None = None
    at: datetime | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None

    def fires(self, created_at: datetime) -> Fires:
        """The fire times; `created_at` anchors an interval that has no `start_at`."""
        if self.kind == "cron":
            assert self.cron is not None
            return compile_cron(self.cron, self.timezone, self.start_at, self.end_at)
        if self.kind == "interval":
            assert self.interval_seconds is not None
            return IntervalFires(
                anchor=self.start_at or created_at,
                interval_us=max(1, round(self.interval_seconds * 1_000_000)),
                end_at=self.end_at,
                skip_anchor=self.start_at is None,
            )
        assert self.at is not None
        return AtFires(self.at)


def check_spec(spec: Spec, now: datetime) -> None:
    """Raise `InvalidField` naming the field when the spec cannot be used; nothing is stored then."""
    for name, moment in (("at", spec.at), ("start_at", spec.start_at), ("end_at", spec.end_at)):
        if moment is not None and not EARLIEST <= moment <= LATEST:
            raise InvalidField(name, f"must lie between {EARLIEST.year} and {LATEST.year}")
    given = [
        name
        for name, value in (("cron", spec.cron), ("interval_seconds", spec.interval_seconds), ("at", spec.at))
        if value is not None
    ]
    if len(given) != 1:
        raise InvalidField(
            "cron" if not given else given[1],
            "give exactly one of `cron`, `interval_seconds` or `at`"
            + (f" (given: {', '.join(given)})" if given else ""),
        )
    time_zone(spec.timezone)
    if spec.kind == "cron":
        assert spec.cron is not None
        compile_cron(spec.cron, spec.timezone)
    elif spec.kind == "interval":
        interval = spec.interval_seconds
        assert interval is not None
        if not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
            raise InvalidField(
                "interval_seconds",
                f"must be between {MIN_INTERVAL_S:g} and {MAX_INTERVAL_S:g} seconds, not {interval:g}",
            )
    elif spec.kind == "at":
        assert spec.at is not None
        if spec.at <= now:
            raise InvalidField(
                "at", f"{spec.at.isoformat()} is in the past (now is {now.isoformat()}); give a future moment"
            )
        if (spec.start_at is not None and spec.at < spec.start_at) or (
            spec.end_at is not None and spec.at > spec.end_at
        ):
            raise InvalidField(
                "at", f"{spec.at.isoformat()} lies outside start_at .. end_at, so it would never fire"
            )
    if spec.start_at is not None and spec.end_at is not None and spec.end_at <= spec.start_at:
        raise InvalidField(
            "end_at", f"end_at {spec.end_at.isoformat()} must be after start_at {spec.start_at.isoformat()}"
        )
    if spec.end_at is not None and spec.end_at <= now:
        raise InvalidField("end_at", f"end_at {spec.end_at.isoformat()} is in the past; give a future moment")


def next_fire_times(fires: Fires, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times strictly after `after`."""
    found: list[datetime] = []
    moment: datetime | None = after
    while moment is not None and len(found) < count:
        moment = fires.next_after(moment)
        if moment is not None:
            found.append(moment)
    return found
