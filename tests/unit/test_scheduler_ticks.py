"""Aligned ticks: the same fire times on every instance, jitter included; sane gaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backburner.scheduler.ticks import EPOCH, AlignedIntervalTrigger, TickGrid


def test_ticks_are_multiples_of_the_interval_from_the_epoch() -> None:
    grid = TickGrid.of("job", 5.0)
    after = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
    assert grid.next_after(after) == datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    assert grid.next_after(grid.next_after(after)) == datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)


def test_two_grids_of_one_job_agree_on_every_tick_jitter_included() -> None:
    first, second = TickGrid.of("poll", 2.0, 0.7), TickGrid.of("poll", 2.0, 0.7)
    moment = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    for _ in range(50):
        a, b = first.next_after(moment), second.next_after(moment)
        assert a == b
        moment = a


def test_jitter_stays_within_bounds_and_keeps_one_run_per_tick() -> None:
    grid = TickGrid.of("poll", 1.0, 0.4)
    fire = grid.next_after(datetime(2026, 1, 1, tzinfo=UTC))
    ticks = set()
    for _ in range(200):
        offset_us = (fire - EPOCH) // timedelta(microseconds=1)
        tick, jitter_us = divmod(offset_us, 1_000_000)
        assert 0 <= jitter_us <= 400_000
        ticks.add(tick)
        following = grid.next_after(fire)
        assert following > fire
        fire = following
    assert len(ticks) == 200  # consecutive ticks, none skipped, none repeated
    assert len({grid.jitter_of(k) for k in range(50)}) > 10  # the jitter does vary


def test_jitter_is_clamped_to_half_an_interval() -> None:
    assert TickGrid.of("job", 1.0, 5.0).jitter_us == 500_000


def test_an_off_grid_run_leaves_at_least_half_an_interval_before_the_next_tick() -> None:
    grid = TickGrid.of("job", 10.0)
    term_start = datetime(2026, 1, 1, 0, 0, 9, 900_000, tzinfo=UTC)  # just before a tick
    following = grid.next_after(term_start)
    assert following == datetime(2026, 1, 1, 0, 0, 20, tzinfo=UTC)
    assert following - term_start >= timedelta(seconds=5)


def test_the_trigger_follows_the_grid_and_describes_itself() -> None:
    trigger = AlignedIntervalTrigger(TickGrid.of("job", 0.5, 0.1))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, now) == trigger.grid.next_after(now)
    assert str(trigger) == "interval[0.5s, jitter up to 0.1s, aligned]"
    assert str(AlignedIntervalTrigger(TickGrid.of("job", 60))) == "interval[60s, aligned]"
    capped = AlignedIntervalTrigger(TickGrid.of("poll", 5, 5), configured_jitter_s=5)
    assert str(capped) == "interval[5s, jitter up to 2.5s (half the interval; 5s configured), aligned]"
