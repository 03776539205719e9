"""Budgets (v4): the metering records (each LLM call and each step attempt, with its cost) and
the tenants' and runs' budget settings.

Revision ID: 0014_v4_cost_records
Revises: 0013_v4_run_budget
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0014_v4_cost_records"
down_revision = "0013_v4_run_budget"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mb_v4_cost_records",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("step_name", sa.String(200), nullable=False),
        sa.Column("pool", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("wall_seconds", sa.Float(), nullable=False),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("reservation_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mb_v4_cost_records_run_id", "mb_v4_cost_records", ["run_id"])
    op.create_index("ix_mb_v4_cost_records_tenant_id", "mb_v4_cost_records", ["tenant_id"])
    op.create_table(
        "mb_v4_budget_settings",
        sa.Column("scope", sa.String(8), primary_key=True),
        sa.Column("scope_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mb_v4_budget_settings")
    op.drop_table("mb_v4_cost_records")
