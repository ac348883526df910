"""Search: a full-text index of passages on each database, a passages version per source, and
the warnings of a file.

The lexical index is derived from `passages.text` and kept by the database itself: an FTS5 table
filled by triggers on SQLite, a generated `tsvector` column with a GIN index on PostgreSQL. A
passage's entry goes with its row, however the row is deleted (a file, or a source's cascade).

Revision ID: 0011_search
Revises: 0010_batch_lifecycle
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_search"
down_revision = "0010_batch_lifecycle"
branch_labels = None
depends_on = None

# Porter stemming on SQLite matches PostgreSQL's `english` configuration closely enough that a
# query finds "stored" under "store" on both.
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE passages_fts USING fts5("
    "text, content='passages', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN "
    "INSERT INTO passages_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER passages_fts_delete AFTER DELETE ON passages BEGIN "
    "INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER passages_fts_update AFTER UPDATE OF text ON passages BEGIN "
    "INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO passages_fts(rowid, text) VALUES (new.id, new.text); END",
    # Passages stored before this revision are indexed too.
    "INSERT INTO passages_fts(passages_fts) VALUES ('rebuild')",
]
POSTGRES_TSVECTOR = [
    "ALTER TABLE passages ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED",
    "CREATE INDEX ix_passages_search_vector ON passages USING gin (search_vector)",
]


def upgrade() -> None:
    with op.batch_alter_table("sources") as table:
        # Bumped with every write or delete of the source's passages: an instance's cached
        # vectors of the source are current while this is unchanged.
        table.add_column(sa.Column("passages_version", sa.BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("files") as table:
        table.add_column(sa.Column("warnings", sa.JSON))
    statements = POSTGRES_TSVECTOR if op.get_bind().dialect.name == "postgresql" else SQLITE_FTS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_passages_search_vector")
        op.execute("ALTER TABLE passages DROP COLUMN search_vector")
    else:
        for trigger in ("passages_fts_update", "passages_fts_delete", "passages_fts_insert"):
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute("DROP TABLE passages_fts")
    with op.batch_alter_table("files") as table:
        table.drop_column("warnings")
    with op.batch_alter_table("sources") as table:
        table.drop_column("passages_version")
