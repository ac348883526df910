"""TOAST compression on PostgreSQL: lz4 where the server was built with it (PostgreSQL 14+).

pglz, the default, is several times slower to compress and to read back, and spends its time
even on values it cannot shrink (a vector's random float bytes).
"""

from __future__ import annotations

import sqlalchemy as sa


def has_lz4(bind: sa.Connection) -> bool:
    return bool(
        bind.execute(
            sa.text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        ).scalar()
    )
