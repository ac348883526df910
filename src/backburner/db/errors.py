"""What a database error means to a caller: the database is away for now (retry later), or a
problem that waiting will not fix (a missing database, a refused login), with what to do."""

from __future__ import annotations

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

# Errors of the server or the network that pass: answered with 503 and `retry-after`.
_TRANSIENT_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable, no route, DNS
    TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc`, the driver error it wraps and their causes (SQLAlchemy wraps asyncpg's errors twice)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 8:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return seen


def _find(
    exc: BaseException, kinds: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    return next((e for e in _chain(exc) if isinstance(e, kinds)), None)


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database cannot be reached or used right now."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection within db_pool_timeout
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if _find(exc, _TRANSIENT_DRIVER_ERRORS) is not None:
        return True
    # SQLite: locked past its busy timeout, or the file cannot be opened.
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)


def permanent_problem(exc: BaseException, database_url: str) -> str | None:
    """A sentence saying what is wrong and how to fix it, for errors that retrying cannot fix."""
    url = make_url(database_url)
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    if _find(exc, asyncpg.exceptions.InvalidCatalogNameError) is not None:
        return (
            f"the database {url.database!r} does not exist on the PostgreSQL server at {where}; "
            f"create it (`createdb -h {url.host or 'localhost'} -p {url.port or 5432} "
            f'-U {url.username or "postgres"} {url.database}`, or `CREATE DATABASE "{url.database}"` '
            "in psql) or correct database_url"
        )
    refused = _find(
        exc,
        (asyncpg.exceptions.InvalidPasswordError, asyncpg.exceptions.InvalidAuthorizationSpecificationError),
    )
    if refused is not None:
        return (
            f"the PostgreSQL server at {where} refused the login of {url.username!r}: {refused}; "
            "correct the user or password in database_url"
        )
    return None
