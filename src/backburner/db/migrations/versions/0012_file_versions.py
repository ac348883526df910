"""Versions of a file: an upload may replace a file, and takes its place once it completes.

Every file gets a lineage (the id of its first version; existing files start their own) and,
when it was uploaded to replace another, that file's id. Both columns are added nullable, so
SQLite adds them in place instead of rebuilding the table.

Revision ID: 0012_file_versions
Revises: 0011_search
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_file_versions"
down_revision = "0011_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as table:
        table.add_column(sa.Column("lineage_id", sa.String(64)))
        table.add_column(sa.Column("replaces_file_id", sa.String(64)))
        table.create_index("ix_files_lineage_id", ["lineage_id"])
        table.create_index("ix_files_source_id_replaces_file_id", ["source_id", "replaces_file_id"])
        table.create_index("ix_files_source_id_file_name", ["source_id", "file_name"])
    op.execute("UPDATE files SET lineage_id = id")


def downgrade() -> None:
    with op.batch_alter_table("files") as table:
        table.drop_index("ix_files_source_id_file_name")
        table.drop_index("ix_files_source_id_replaces_file_id")
        table.drop_index("ix_files_lineage_id")
        table.drop_column("replaces_file_id")
        table.drop_column("lineage_id")
