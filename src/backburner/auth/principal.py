"""Who is calling: the organization every query is scoped by, and whether it may administer."""

from __future__ import annotations

from dataclasses import dataclass

from backburner.db.tables import DEFAULT_ORGANIZATION_ID


@dataclass(frozen=True)
class Principal:
    organization_id: str
    is_admin: bool  # may use the admin routes, for its own organization
    key_id: str | None  # None when auth_mode is `none`
    # May act on the whole deployment: pause jobs, see every organization's counts.
    is_deployment_admin: bool = False


OPEN_PRINCIPAL = Principal(DEFAULT_ORGANIZATION_ID, is_admin=True, key_id=None, is_deployment_admin=True)
