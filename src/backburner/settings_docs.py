"""The settings table of the README, made from the `Settings` model so that it cannot drift."""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from backburner.settings import Settings, field_section
from backburner.settings_loader import ENV_PREFIX

BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def _default(value: Any) -> str:
    if value is None or value is PydanticUndefined:
        return "(none)"
    if isinstance(value, SecretStr):
        return "(secret)"
    text = json.dumps(value, default=str)
    return f"`{text}`"


def settings_table() -> str:
    rows = ["| setting | environment variable | section | default | meaning |", "|---|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        rows.append(
            f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | `{field_section(name)}` | {_default(info.default)} "
            f"| {info.description or ''} |"
        )
    return "\n".join(rows)


def render_into(readme: str) -> str:
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{settings_table()}\n{END}{tail}"
