"""Pure decisions of schedules: catch-up, overlap, retries, the allow-list, and list settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backburner.schedules.allowlist import is_allowed, url_prefix_problem
from backburner.schedules.cli import parse_duration_s
from backburner.schedules.policies import (
    Active,
    CatchUp,
    Overlap,
    Policy,
    RunOutcome,
    apply_overlap,
    plan_fires,
    retry_delay_s,
)
from backburner.schedules.specs import IntervalFires, compile_cron
from backburner.settings_loader import SettingsError, load_settings

T0 = datetime(2025, 6, 1, 12, tzinfo=UTC)
EVERY_10S = IntervalFires(T0, 10_000_000)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_nothing_is_due_before_the_next_fire_time() -> None:
    plan = plan_fires(EVERY_10S, at(10), at(9.9), Policy(), 100)
    assert plan.fires == () and plan.next_fire_at == at(10) and plan.missed == 0


@pytest.mark.parametrize(
    ("catch_up", "limit", "fires", "missed"),
    [
        (CatchUp.SKIP, 10, [], 5),
        (CatchUp.LATEST, 10, [50], 4),
        (CatchUp.ALL, 10, [10, 20, 30, 40, 50], 0),
        (CatchUp.ALL, 3, [30, 40, 50], 2),
    ],
)
def test_catch_up_after_five_missed_fire_times(
    catch_up: CatchUp, limit: int, fires: list[int], missed: int
) -> None:
    # Down from 5 s to 56 s: fires at 10 .. 50 s are all later than the 5 s grace.
    policy = Policy(catch_up=catch_up, catch_up_limit=limit, misfire_grace_s=5)
    plan = plan_fires(EVERY_10S, at(10), at(56), policy, 100)
    assert plan.fires == tuple(at(s) for s in fires)
    assert plan.missed == missed and plan.next_fire_at == at(60)


def test_fires_within_the_grace_always_run() -> None:
    policy = Policy(catch_up=CatchUp.SKIP, misfire_grace_s=25)
    plan = plan_fires(EVERY_10S, at(10), at(56), policy, 100)
    assert plan.fires == (at(40), at(50)) and plan.missed == 3


def test_a_long_cron_outage_is_walked_within_the_budget_and_loses_nothing() -> None:
    every_minute = compile_cron("* * * * *")
    policy = Policy(catch_up=CatchUp.ALL, catch_up_limit=3, misfire_grace_s=0)
    start, now = T0 + timedelta(minutes=1), T0 + timedelta(minutes=30, seconds=30)
    walked, moment, rounds = 0, start, 0
    while True:
        rounds += 1
        plan = plan_fires(every_minute, moment, now, policy, budget=10)
        walked += plan.missed
        assert plan.next_fire_at is not None
        moment = plan.next_fire_at
        if plan.fires:
            break
    assert rounds > 2  # the budget split the walk
    assert plan.fires == tuple(T0 + timedelta(minutes=m) for m in (28, 29, 30))
    assert walked == 27 and moment == T0 + timedelta(minutes=31)


@pytest.mark.parametrize(
    ("overlap", "active", "expected"),
    [
        (Overlap.SKIP, Active(), ["delivering", "skipped", "skipped"]),
        (Overlap.SKIP, Active(delivering=1), ["skipped", "skipped", "skipped"]),
        (Overlap.BUFFER_ONE, Active(delivering=1), ["buffered", "skipped", "skipped"]),
        (Overlap.BUFFER_ONE, Active(delivering=1, buffered=True), ["skipped", "skipped", "skipped"]),
        (Overlap.BUFFER_ONE, Active(), ["delivering", "buffered", "skipped"]),
        (Overlap.ALLOW, Active(delivering=2), ["delivering", "delivering", "delivering"]),
    ],
)
def test_overlap(overlap: Overlap, active: Active, expected: list[str]) -> None:
    outcomes = apply_overlap([at(1), at(2), at(3)], active, overlap)
    assert outcomes == [RunOutcome(e) for e in expected]


def test_retry_delays_double_up_to_five_minutes() -> None:
    assert [retry_delay_s(n, 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay_s(30, 1.0) == 300.0


ALLOWED = [
    "https://hooks.example.com/agents/",
    "http://127.0.0.1:9000/in",
    "https://api.example.org/x?token=a",
]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/agents/wake", True),
        ("https://HOOKS.example.com:443/agents/a/b?q=1", True),
        ("https://hooks.example.com/agents", False),  # the prefix ends with a slash
        ("https://hooks.example.com.evil.net/agents/wake", False),
        ("https://evil.net/?https://hooks.example.com/agents/", False),
        ("https://hooks.example.com@evil.net/agents/wake", False),
        ("https://hooks.example.com/agents/../admin", False),
        ("https://hooks.example.com/agents/%2e%2e/admin", False),
        ("http://hooks.example.com/agents/wake", False),  # another scheme
        ("https://hooks.example.com:8443/agents/wake", False),  # another port
        ("http://127.0.0.1:9000/in", True),
        ("http://127.0.0.1:9000/in/deep", True),
        ("http://127.0.0.1:9000/inside", False),  # not at a segment boundary
        ("http://127.0.0.1:9001/in", False),
        ("https://api.example.org/x?token=a&more=1", True),
        ("https://api.example.org/x?token=b", False),
        ("https://hooks.example.com/agents/a\\b", False),
        ("ftp://hooks.example.com/agents/", False),
    ],
)
def test_allow_list_matches_by_parts(url: str, allowed: bool) -> None:
    assert is_allowed(url, ALLOWED) is allowed


def test_allow_list_entries_must_be_http_urls() -> None:
    assert url_prefix_problem("https://ok.example/") is None
    assert url_prefix_problem("hooks.example.com") is not None
    assert url_prefix_problem("https://user:pw@ok.example/") is not None


def test_list_and_mapping_settings_from_the_environment() -> None:
    env = {
        "BACKBURNER_SCHEDULE_WEBHOOK_ALLOWED_URLS": "https://a.example/, http://127.0.0.1:9/hooks",
        "BACKBURNER_SCHEDULE_HANDLERS": "wake=tests.support.schedules:record_fire",
    }
    settings = load_settings(environ=env).settings
    assert settings.schedule_webhook_allowed_urls == ("https://a.example/", "http://127.0.0.1:9/hooks")
    assert settings.schedule_handlers == {"wake": "tests.support.schedules:record_fire"}
    as_json = {
        "BACKBURNER_SCHEDULE_WEBHOOK_ALLOWED_URLS": '["https://a.example/"]',
        "BACKBURNER_SCHEDULE_HANDLERS": '{"wake": "pkg.mod:fn"}',
    }
    settings = load_settings(environ=as_json).settings
    assert settings.schedule_webhook_allowed_urls == ("https://a.example/",)
    assert settings.schedule_handlers == {"wake": "pkg.mod:fn"}
    assert load_settings(environ={}).settings.schedule_webhook_allowed_urls == ()


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("BACKBURNER_SCHEDULE_WEBHOOK_ALLOWED_URLS", "hooks.example.com", "absolute http:// or https://"),
        ("BACKBURNER_SCHEDULE_WEBHOOK_ALLOWED_URLS", '["https://a/", ', "not a JSON list"),
        ("BACKBURNER_SCHEDULE_HANDLERS", "wake", "name=package.module:function"),
        ("BACKBURNER_SCHEDULE_HANDLERS", "wake=not a reference", "package.module:function"),
    ],
)
def test_bad_list_settings_name_the_setting(variable: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={variable: value})
    message = str(caught.value)
    assert variable.removeprefix("BACKBURNER_").lower() in message and says in message, message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("90", 90), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "m5", "5 m", "-3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_s(text)
