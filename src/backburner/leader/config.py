"""What every elector needs to know about its election, converted once from `Settings`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ElectionMode = Literal["wait", "poll"]


@dataclass(frozen=True)
class ElectionConfig:
    election: str
    instance_id: str
    lease_s: float
    mode: ElectionMode
    # `poll_lock_retry_interval_seconds`: the poll period, and the cap of the reconnect backoff.
    retry_interval_s: float
