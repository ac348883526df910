"""Slots shared by organizations: a cap per organization, and freed slots to the one holding
fewest."""

from __future__ import annotations

import asyncio

from backburner.fair_slots import FairSlots

LONG_S = 30.0  # a wait that is never meant to run out


async def test_one_organization_leaves_a_slot_to_the_others() -> None:
    slots = FairSlots(3)
    assert await slots.acquire("a", LONG_S) and await slots.acquire("a", LONG_S)
    assert not await slots.acquire("a", 0.05)  # a slot is free, but not to a third search of a
    assert await slots.acquire("b", 0.05)


async def test_a_freed_slot_goes_to_the_organization_holding_fewest() -> None:
    slots = FairSlots(3)
    for organization in ("a", "a", "b"):
        assert await slots.acquire(organization, LONG_S)
    b_again = asyncio.create_task(slots.acquire("b", LONG_S))
    await asyncio.sleep(0)  # b waits first
    c = asyncio.create_task(slots.acquire("c", LONG_S))
    await asyncio.sleep(0)
    slots.release("a")
    assert await asyncio.wait_for(c, LONG_S)  # c holds none, b one: c first
    assert not b_again.done()
    slots.release("a")
    assert await asyncio.wait_for(b_again, LONG_S)


async def test_waits_that_end_leave_nothing_behind() -> None:
    slots = FairSlots(1)
    assert await slots.acquire("a", LONG_S)
    assert not await slots.acquire("b", 0.01)  # timed out
    cancelled = asyncio.create_task(slots.acquire("c", LONG_S))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    slots.release("a")
    assert slots._waiting == [] and slots._held == {} and slots._in_use == 0
    # A search cancelled in the same turn as it is given a slot gives it back.
    assert await slots.acquire("a", LONG_S)
    given_then_cancelled = asyncio.create_task(slots.acquire("b", LONG_S))
    await asyncio.sleep(0)
    slots.release("a")  # b is given the slot ...
    given_then_cancelled.cancel()  # ... and cancelled before it runs again
    await asyncio.gather(given_then_cancelled, return_exceptions=True)
    assert slots._held == {} and slots._in_use == 0
    assert await slots.acquire("d", 0.01)
