"""Passages on PostgreSQL: the text, vector and `tsvector` of a row live out of line (TOAST).

A passage row held all three inline (0004 kept rows up to 8 kB uncompressed), about 4 kB, so one
row filled a page: a lexical search, which reads one row per match of each word, read one page
per match. Out of line, the row keeps its ids and pointers (about 150 bytes, 50 to a page; the
heap of 100,000 passages is 13 MB instead of 779 MB), and the text and `tsvector` are compressed
with the column's method (lz4, 0013). The vector does not compress and is never tried
(`EXTERNAL`). Measured on 100,000 passages (`bench/search.py`'s corpus, the heap rewritten):
lexical search 17.6 ms instead of 43.6 at the median; reading every vector of the source 1.0 s
instead of 0.8.

Rows written before this revision keep their layout until they are written again
(`VACUUM FULL passages` rewrites them all, holding the table's lock while it runs).

Revision ID: 0015_narrow_passages
Revises: 0014_reembed
"""

from alembic import op

revision = "0015_narrow_passages"
down_revision = "0014_reembed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # 128 is the smallest target: every attribute that can leave the row does.
        op.execute("ALTER TABLE passages SET (toast_tuple_target = 128)")
        op.execute("ALTER TABLE passages ALTER COLUMN embedding SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE passages ALTER COLUMN embedding SET STORAGE EXTENDED")
        op.execute("ALTER TABLE passages SET (toast_tuple_target = 8160)")
