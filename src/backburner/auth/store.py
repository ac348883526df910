"""The only SQL for API keys and organizations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.auth.principal import Principal
from backburner.auth.tables import api_keys
from backburner.auth.tokens import Token, hash_secret, new_token, parse_token, secret_matches
from backburner.db.tables import organizations
from backburner.db.transactions import reading
from backburner.ids import new_id


@dataclass(frozen=True)
class KeyInfo:
    id: str
    organization: str
    organization_id: str
    name: str
    is_admin: bool
    created_at: datetime
    revoked_at: datetime | None
    is_deployment_admin: bool = False
    organization_created: bool = False


class UnknownKey(Exception):
    pass


async def create_key(
    engine: AsyncEngine,
    *,
    organization: str,
    name: str,
    is_admin: bool,
    now: datetime,
    is_deployment_admin: bool = False,
) -> tuple[KeyInfo, str]:
    """Create a key (and its organization if new); returns the key and its token, shown once.

    A deployment admin key is an admin key of its organization that may also act on the whole
    deployment."""
    is_admin = is_admin or is_deployment_admin
    token = new_token()
    async with engine.begin() as conn:
        # An organization is named by its name or its id (`org-default`, as the docs call the
        # organization that holds what was made before keys were turned on).
        found = (
            await conn.execute(
                select(organizations.c.id, organizations.c.name).where(
                    or_(organizations.c.id == organization, organizations.c.name == organization)
                )
            )
        ).first()
        if found is None:
            org_id = new_id("org")
            await conn.execute(organizations.insert().values(id=org_id, name=organization, created_at=now))
        else:
            org_id, organization = found.id, found.name
        await conn.execute(
            api_keys.insert().values(
                id=token.key_id,
                organization_id=org_id,
                name=name,
                is_admin=is_admin,
                is_deployment_admin=is_deployment_admin,
                secret_hash=hash_secret(token.secret),
                created_at=now,
            )
        )
    info = KeyInfo(
        id=token.key_id,
        organization=organization,
        organization_id=org_id,
        name=name,
        is_admin=is_admin,
        created_at=now,
        revoked_at=None,
        is_deployment_admin=is_deployment_admin,
        organization_created=found is None,
    )
    return info, token.render()


async def list_keys(engine: AsyncEngine) -> list[KeyInfo]:
    query = (
        select(api_keys, organizations.c.name.label("organization"))
        .join(organizations, organizations.c.id == api_keys.c.organization_id)
        .order_by(api_keys.c.created_at)
    )
    async with reading(engine) as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [
        KeyInfo(
            r["id"],
            r["organization"],
            r["organization_id"],
            r["name"],
            r["is_admin"],
            r["created_at"],
            r["revoked_at"],
            r["is_deployment_admin"],
        )
        for r in rows
    ]


async def revoke_key(engine: AsyncEngine, key_id: str, now: datetime) -> None:
    async with engine.begin() as conn:
        result = await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        if result.rowcount == 0:
            exists = (await conn.execute(select(api_keys.c.id).where(api_keys.c.id == key_id))).first()
            raise UnknownKey(f"no key {key_id!r}" if exists is None else f"key {key_id!r} is already revoked")


async def authenticate(engine: AsyncEngine, token_text: str) -> Principal | None:
    """The principal of a valid, unrevoked key; None for anything else."""
    token: Token | None = parse_token(token_text)
    if token is None:
        return None
    query = select(
        api_keys.c.organization_id,
        api_keys.c.is_admin,
        api_keys.c.is_deployment_admin,
        api_keys.c.secret_hash,
    ).where(api_keys.c.id == token.key_id, api_keys.c.revoked_at.is_(None))
    async with reading(engine) as conn:
        row = (await conn.execute(query)).first()
    if row is None or not secret_matches(token.secret, row.secret_hash):
        return None
    return Principal(row.organization_id, bool(row.is_admin), token.key_id, bool(row.is_deployment_admin))
