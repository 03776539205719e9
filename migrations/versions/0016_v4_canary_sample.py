"""The canary between versions (v4): one sample per finished run, by Worker Deployment version.

Revision ID: 0016_v4_canary_sample
Revises: 0013_v4_run_budget
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0016_v4_canary_sample"
down_revision = "0015_v4_run_sla"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mb_v4_canary_sample",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("deployment", sa.String(200), nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("repairs", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mb_v4_canary_sample_tenant_id", "mb_v4_canary_sample", ["tenant_id"])
    op.create_index("ix_mb_v4_canary_sample_version", "mb_v4_canary_sample", ["version"])
    op.create_index("ix_mb_v4_canary_sample_finished_at", "mb_v4_canary_sample", ["finished_at"])


def downgrade() -> None:
    op.drop_table("mb_v4_canary_sample")
