"""`sources.model_switches`: how many times a re-embedding switched the source's model.

A cached matrix of a source's vectors tags each file with this count (see
`PassageStore.vector_files`): a switch removes the vectors re-embedding made of other models, so
vectors read before a switch are never kept after another one, even of the same model.

Revision ID: 0016_model_switches
Revises: 0015_narrow_passages
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_model_switches"
down_revision = "0015_narrow_passages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as table:
        table.add_column(sa.Column("model_switches", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sources") as table:
        table.drop_column("model_switches")
