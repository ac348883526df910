"""Who is calling: the organization every query is scoped by, and whether it may administer."""

from __future__ import annotations

from dataclasses import dataclass

from backburner.db.tables import DEFAULT_ORGANIZATION_ID


@dataclass(frozen=True)
class Principal:
    organization_id: str
    is_admin: bool
    key_id: str | None  # None when auth_mode is `none`


OPEN_PRINCIPAL = Principal(DEFAULT_ORGANIZATION_ID, is_admin=True, key_id=None)
