"""Budgets (v4): the ledgers of runs and tenants, and the reservations against them.

Revision ID: 0013_v4_run_budget
Revises: 0012_v4_chaos_event
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0013_v4_run_budget"
down_revision = "0012_v4_chaos_event"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mb_v4_run_budget",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("scope_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("dimension", sa.String(16), nullable=False),
        sa.Column("limit_value", sa.Float(), nullable=True),
        sa.Column("reserved", sa.Float(), nullable=False),
        sa.Column("spent", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("scope", "scope_id", "period", "dimension", name="uq_mb_v4_run_budget_key"),
    )
    op.create_index("ix_mb_v4_run_budget_scope_id", "mb_v4_run_budget", ["scope_id"])
    op.create_index("ix_mb_v4_run_budget_tenant_id", "mb_v4_run_budget", ["tenant_id"])
    op.create_table(
        "mb_v4_budget_reservations",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("ledger_ids", sa.JSON(), nullable=False),
        sa.Column("amounts", sa.JSON(), nullable=False),
        sa.Column("actual", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_mb_v4_budget_reservations_run_id", "mb_v4_budget_reservations", ["run_id"])
    op.create_index("ix_mb_v4_budget_reservations_tenant_id", "mb_v4_budget_reservations", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("mb_v4_budget_reservations")
    op.drop_table("mb_v4_run_budget")
