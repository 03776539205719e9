"""Governance: audit events name their target, before and after, and the request; each tenant's
privacy mode, allowlists and redaction patterns.

Revision ID: 0010_governance
Revises: 0009_v4_replay_bundle
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_governance"
down_revision = "0009_v4_replay_bundle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("target", sa.String(255), nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("before", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("after", sa.JSON(), nullable=True))
    op.create_index("ix_audit_events_request_id", "audit_events", ["request_id"])
    op.create_index("ix_audit_events_created_at", "audit_events", ["created_at"])
    op.create_table(
        "mb_v4_tenant_governance",
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("privacy", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mb_v4_tenant_governance")
    op.drop_index("ix_audit_events_created_at", table_name="audit_events")
    op.drop_index("ix_audit_events_request_id", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("after")
        batch.drop_column("before")
        batch.drop_column("request_id")
        batch.drop_column("target")
