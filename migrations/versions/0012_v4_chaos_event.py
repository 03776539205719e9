"""Chaos (v4): where injection is on, and every injection with its recovery.

Revision ID: 0012_v4_chaos_event
Revises: 0010_governance
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_v4_chaos_event"
down_revision = "0010_governance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mb_v4_chaos_scope",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("weights", sa.JSON(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("max_attempt", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "run_id", name="uq_mb_v4_chaos_scope"),
    )
    op.create_index("ix_mb_v4_chaos_scope_tenant_id", "mb_v4_chaos_scope", ["tenant_id"])
    op.create_table(
        "mb_v4_chaos_event",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("step_name", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("fault_type", sa.String(32), nullable=False),
        sa.Column("expected_class", sa.String(32), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("roll", sa.Float(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("injected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("recovered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recovery_seconds", sa.Float(), nullable=True),
        sa.Column("recovered_attempt", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.UniqueConstraint("run_id", "step_index", "attempt", name="uq_mb_v4_chaos_event"),
    )
    op.create_index("ix_mb_v4_chaos_event_tenant_id", "mb_v4_chaos_event", ["tenant_id"])
    op.create_index("ix_mb_v4_chaos_event_run_id", "mb_v4_chaos_event", ["run_id"])
    op.create_index("ix_mb_v4_chaos_event_injected_at", "mb_v4_chaos_event", ["injected_at"])


def downgrade() -> None:
    op.drop_table("mb_v4_chaos_event")
    op.drop_table("mb_v4_chaos_scope")
