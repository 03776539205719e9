"""Circuit breakers (v4): their durable state and the runs waiting on them.

Revision ID: 0006_circuit_breakers
Revises: 0005_gate_proposals
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_circuit_breakers"
down_revision = "0005_gate_proposals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mb_v4_circuit_breaker_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("failure_class", sa.String(32), nullable=False),
        sa.Column("dependency", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cooldown_seconds", sa.Float(), nullable=True),
        sa.Column("next_probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("probe_run_id", sa.String(64), nullable=True),
        sa.Column("probe_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trips", sa.Integer(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("last_reason", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "failure_class", "dependency", name="uq_mb_v4_breaker_key"),
    )
    op.create_index("ix_mb_v4_circuit_breaker_state_tenant_id", "mb_v4_circuit_breaker_state", ["tenant_id"])
    op.create_table(
        "mb_v4_circuit_breaker_waits",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("breaker_id", sa.Integer(),
                  sa.ForeignKey("mb_v4_circuit_breaker_state.id", ondelete="CASCADE"), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step_name", sa.String(64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("breaker_id", "run_id", name="uq_mb_v4_breaker_wait"),
    )
    op.create_index("ix_mb_v4_circuit_breaker_waits_breaker_id", "mb_v4_circuit_breaker_waits", ["breaker_id"])
    op.create_index("ix_mb_v4_circuit_breaker_waits_run_id", "mb_v4_circuit_breaker_waits", ["run_id"])


def downgrade() -> None:
    op.drop_table("mb_v4_circuit_breaker_waits")
    op.drop_table("mb_v4_circuit_breaker_state")
