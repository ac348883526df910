"""An async client for the emulator's admin API, for tests and benchmarks."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal, Self

import httpx

from backburner.emulator.admin_api import ADMIN_PREFIX
from backburner.emulator.faults import ActiveFault, FaultRule, RouteName
from backburner.emulator.outcomes import Scenario


class EmulatorAdmin:
    """Drives one emulator's admin API. Use as ``async with EmulatorAdmin(base_url) as admin``."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/") + ADMIN_PREFIX, timeout=timeout_s)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self._http.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    async def add_fault(self, rule: FaultRule | None = None, **fields: Any) -> ActiveFault:
        """Adds a fault, given as a FaultRule or as its fields (``route=..., kind=..., count=...``)."""
        rule = rule if rule is not None else FaultRule.model_validate(fields)
        return ActiveFault.model_validate(await self._call("POST", "/faults", rule.model_dump(mode="json")))

    async def faults(self) -> list[ActiveFault]:
        body = await self._call("GET", "/faults")
        return [ActiveFault.model_validate(item) for item in body["data"]]

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/faults")

    async def set_scenario(self, scenario: Scenario | None = None, **fields: Any) -> None:
        """Sets the scenario for batches created from now on."""
        scenario = scenario if scenario is not None else Scenario.model_validate(fields)
        await self._call("PUT", "/scenario", scenario.model_dump(mode="json"))

    async def set_batch_scenario(
        self, batch_id: str, scenario: Scenario | None = None, **fields: Any
    ) -> None:
        scenario = scenario if scenario is not None else Scenario.model_validate(fields)
        await self._call("PUT", f"/batches/{batch_id}/scenario", scenario.model_dump(mode="json"))

    async def end_batch(self, batch_id: str) -> dict[str, Any]:
        """Ends a batch now; returns it in its provider's shape."""
        result: dict[str, Any] = await self._call("POST", f"/batches/{batch_id}/end")
        return result

    async def advance_clock(self, seconds: float) -> float:
        body = await self._call("POST", "/clock/advance", {"seconds": seconds})
        return float(body["offset_s"])

    async def reset(self) -> None:
        await self._call("POST", "/reset")

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/stats")
        return result

    async def request_count(self, route: RouteName) -> int:
        stats = await self.stats()
        return int(stats["requests"].get(route, 0))

    async def seed(
        self,
        provider: Literal["anthropic", "openai"],
        *,
        batches: int = 1,
        items_per_batch: int = 1,
        custom_id_prefix: str = "item-",
        model: str = "emulated-model",
        endpoint: str = "/v1/chat/completions",
    ) -> list[str]:
        body = {
            "provider": provider,
            "batches": batches,
            "items_per_batch": items_per_batch,
            "custom_id_prefix": custom_id_prefix,
            "model": model,
            "endpoint": endpoint,
        }
        result = await self._call("POST", "/seed", body)
        return list(result["ids"])
