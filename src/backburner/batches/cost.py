"""Estimated spend: token totals priced by the configured table, with the batch discount."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backburner.batches.store import UsageRow
from backburner.settings import ModelPrice

PER_MILLION = 1_000_000


def estimated_cost_usd(usage: UsageRow, prices: Mapping[str, ModelPrice], discount: float) -> float | None:
    """US dollars for `usage`, or None when the model has no price in the table."""
    price = prices.get(usage.model)
    if price is None:
        return None
    list_usd = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * price.cache_read
        + usage.cache_write_tokens * price.cache_write
    ) / PER_MILLION
    return round(list_usd * discount, 6)


def usage_view(rows: list[UsageRow], prices: Mapping[str, ModelPrice], discount: float) -> dict[str, Any]:
    """Totals over `rows` and each model's line, as JSON-ready values."""
    models = []
    totals = {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0}
    cost: float | None = 0.0 if rows else None
    for row in rows:
        row_cost = estimated_cost_usd(row, prices, discount)
        models.append(
            {
                **_tokens(row),
                "provider": row.provider,
                "model": row.model,
                "items": row.items,
                "estimated_cost_usd": row_cost,
            }
        )
        for name in totals:
            totals[name] += getattr(row, name)
        cost = None if cost is None or row_cost is None else cost + row_cost
    return {
        **totals,
        "estimated_cost_usd": None if cost is None else round(cost, 6),
        "by_model": models,
    }


def _tokens(row: UsageRow) -> dict[str, int]:
    return {
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cache_read_tokens": row.cache_read_tokens,
        "cache_write_tokens": row.cache_write_tokens,
    }
