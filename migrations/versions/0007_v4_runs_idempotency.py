"""v4 distributed execution: idempotency keys of run submissions and of step attempts, and
tenants' v4 settings.

Revision ID: 0007_v4_runs_idempotency
Revises: 0006_circuit_breakers
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_v4_runs_idempotency"
down_revision = "0006_circuit_breakers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("build_steps") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))
        batch.create_unique_constraint("uq_build_steps_idempotency_key", ["idempotency_key"])
    op.create_table(
        "mb_v4_idempotency_key",
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mb_v4_tenant_settings",
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("build_steps") as batch:
        batch.drop_constraint("uq_build_steps_idempotency_key", type_="unique")
        batch.drop_column("idempotency_key")
    op.drop_table("mb_v4_tenant_settings")
    op.drop_table("mb_v4_idempotency_key")
