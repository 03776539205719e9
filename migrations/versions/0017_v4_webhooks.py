"""Governance (v4): per-tenant webhooks and their delivery log; a run's own privacy override.

Revision ID: 0017_v4_webhooks
Revises: 0013_v4_run_budget
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0017_v4_webhooks"
down_revision = "0016_v4_canary_sample"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mb_v4_webhooks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mb_v4_webhooks_tenant_id", "mb_v4_webhooks", ["tenant_id"])
    op.create_table(
        "mb_v4_webhook_deliveries",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("webhook_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mb_v4_webhook_deliveries_webhook_id", "mb_v4_webhook_deliveries", ["webhook_id"])
    op.create_index("ix_mb_v4_webhook_deliveries_tenant_id", "mb_v4_webhook_deliveries", ["tenant_id"])
    op.create_index("ix_mb_v4_webhook_deliveries_run_id", "mb_v4_webhook_deliveries", ["run_id"])
    op.create_table(
        "mb_v4_run_privacy",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("privacy", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mb_v4_run_privacy")
    op.drop_table("mb_v4_webhook_deliveries")
    op.drop_table("mb_v4_webhooks")
