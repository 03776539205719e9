"""SLA classes (v4): a run's SLA events (deadline warnings and violations, model choices,
best-of-N candidates, rungs its repair depth skipped).

Revision ID: 0015_v4_run_sla
Revises: 0013_v4_run_budget
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0015_v4_run_sla"
down_revision = "0014_v4_cost_records"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mb_v4_run_sla_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("step_name", sa.String(64), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "kind", "key", name="uq_mb_v4_run_sla_events_key"),
    )
    op.create_index("ix_mb_v4_run_sla_events_run_id", "mb_v4_run_sla_events", ["run_id"])
    op.create_index("ix_mb_v4_run_sla_events_tenant_id", "mb_v4_run_sla_events", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("mb_v4_run_sla_events")
