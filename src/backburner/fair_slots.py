"""Slots for work of several organizations (searches, schedule deliveries), shared fairly."""

from __future__ import annotations

import asyncio


class FairSlots:
    """At most `total` holders at once, of which one organization is at most all but one.

    A free slot goes to the waiting organization that holds the fewest, the earliest waiter among
    equals. So one tenant's burst of slow work (the first search of a large source, deliveries
    to a webhook that hangs) never leaves another tenant waiting for it to end: the other finds
    the slot the burst may not take, or the next one to be freed.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.per_organization = max(1, total - 1)
        self._in_use = 0
        self._held: dict[str, int] = {}  # organization -> slots held; none kept at 0
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []  # oldest first

    async def acquire(self, organization_id: str, timeout_s: float | None = None) -> bool:
        """True once the organization holds a slot (release it); False if none came in time."""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((organization_id, granted))
        self._grant()
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(granted)
        except TimeoutError:
            if granted.done():  # given as the time ran out
                return True
            self._forget(granted)
            return False
        except BaseException:
            if granted.done():
                self.release(organization_id)
            else:
                self._forget(granted)
            raise
        return True

    def release(self, organization_id: str) -> None:
        self._in_use -= 1
        held = self._held[organization_id] - 1
        if held:
            self._held[organization_id] = held
        else:
            del self._held[organization_id]
        self._grant()

    def _grant(self) -> None:
        while self._in_use < self.total:
            # (slots held, place in line) of each waiter whose organization may take one more.
            eligible = [
                (held, index)
                for index, (organization_id, _) in enumerate(self._waiting)
                if (held := self._held.get(organization_id, 0)) < self.per_organization
            ]
            if not eligible:
                return
            organization_id, granted = self._waiting.pop(min(eligible)[1])
            self._in_use += 1
            self._held[organization_id] = self._held.get(organization_id, 0) + 1
            granted.set_result(None)

    def _forget(self, granted: asyncio.Future[None]) -> None:
        self._waiting = [waiter for waiter in self._waiting if waiter[1] is not granted]
