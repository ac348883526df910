"""One emulator instance's state, shared by its routers; no module-level state anywhere."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from backburner.emulator.clock import AdjustableClock, Clock
from backburner.emulator.config import EmulatorConfig
from backburner.emulator.faults import FaultBook
from backburner.emulator.gate import Gate, RequestStats
from backburner.emulator.lifecycle import OpenAIPhases
from backburner.emulator.outcomes import Scenario, plan_items
from backburner.emulator.records import BatchRecord, ModelColumn, OpenAIDetails, Provider
from backburner.emulator.store import EmulatorStore


class EmulatorState:
    def __init__(self, config: EmulatorConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = AdjustableClock() if clock is None else AdjustableClock(clock)
        self.store = EmulatorStore()
        self.faults = FaultBook(config.faults)
        self.stats = RequestStats()
        self.gate = Gate(self.faults, self.stats)
        self.phases = OpenAIPhases(
            cancel_after_s=config.cancel_after_s,
            validating_s=config.validating_s,
            finalizing_s=config.finalizing_s,
        )
        self._scenario_lock = threading.Lock()
        self._scenario = config.scenario

    @property
    def scenario(self) -> Scenario:
        """The scenario given to batches created from now on."""
        return self._scenario

    def set_scenario(self, scenario: Scenario) -> None:
        with self._scenario_lock:
            self._scenario = scenario

    @property
    def embedding_latency_s(self) -> float:
        return self.config.embedding_latency_ms / 1000

    def complete_after_s(self, scenario: Scenario) -> float:
        if scenario.complete_after_s is not None:
            return scenario.complete_after_s
        return self.config.complete_after_s

    def reset(self) -> None:
        """Back to how it started: no batches or files, the configured faults and scenario, clock unmoved."""
        self.store.clear()
        self.faults.clear()
        for rule in self.config.faults:
            self.faults.add(rule)
        self.stats.clear()
        self.clock.reset()
        self.set_scenario(self.config.scenario)

    def create_batch(
        self,
        provider: Provider,
        batch_id: str,
        custom_ids: Sequence[str],
        models: ModelColumn,
        openai: OpenAIDetails | None = None,
    ) -> BatchRecord:
        """Plans every item's outcome under the current default scenario and stores the batch."""
        scenario = self.scenario
        now = self.clock()
        record = BatchRecord(
            id=batch_id,
            provider=provider,
            seq=self.store.next_seq(),
            custom_ids=custom_ids,
            models=models,
            scenario=scenario,
            plan=plan_items(custom_ids, scenario),
            created_at=now,
            natural_end_at=now + self.complete_after_s(scenario),
            openai=openai,
        )
        self.store.add_batch(record)
        return record
