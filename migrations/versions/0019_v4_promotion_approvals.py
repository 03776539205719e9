"""Promote (v4): a risky run's promotion needs a second admin; each admin's approval of its risks.

Revision ID: 0019_v4_promotion_approvals
Revises: 0018_v4_run_source_branch
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0019_v4_promotion_approvals"
down_revision = "0018_v4_run_source_branch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mb_v4_promotion_approvals",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("approver", sa.String(200), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("risks", sa.JSON(), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mb_v4_promotion_approvals")
