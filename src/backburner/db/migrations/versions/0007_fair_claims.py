"""Fair file claims (each organization's last claim; files by organization and status) and
deployment admin keys.

Revision ID: 0007_fair_claims
Revises: 0006_job_pauses
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_fair_claims"
down_revision = "0006_job_pauses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_claim_turns",
        sa.Column("organization_id", sa.String(64), primary_key=True),
        sa.Column("last_claimed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_files_organization_id_status", "files", ["organization_id", "status"])
    with op.batch_alter_table("api_keys") as table:
        table.add_column(
            sa.Column("is_deployment_admin", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.drop_column("is_deployment_admin")
    op.drop_index("ix_files_organization_id_status", "files")
    op.drop_table("file_claim_turns")
