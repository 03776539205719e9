"""Tenants' own failure patterns and people's corrections of the classifier.

Revision ID: 0004_classifier_knowledge
Revises: 0003_approvals
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_classifier_knowledge"
down_revision = "0003_approvals"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tenant_patterns",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("entry_id", sa.String(80), nullable=False),
        sa.Column("failure_type", sa.String(32), nullable=True),
        sa.Column("pattern", sa.Text(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("kind", sa.String(16), nullable=False, server_default="cause"),
        sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("tenant_id", "entry_id", name="uq_tenant_patterns_entry"),
    )
    op.create_index("ix_tenant_patterns_tenant_id", "tenant_patterns", ["tenant_id"])
    op.create_table(
        "classification_corrections",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("step_name", sa.String(64), nullable=False, server_default=""),
        sa.Column("predicted", sa.String(32), nullable=False),
        sa.Column("corrected", sa.String(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.Column("log_window", sa.Text(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("proposed_pattern", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
        _ts("created_at"),
    )
    op.create_index("ix_classification_corrections_tenant_id", "classification_corrections", ["tenant_id"])
    op.create_index("ix_classification_corrections_run_id", "classification_corrections", ["run_id"])


def downgrade() -> None:
    op.drop_table("classification_corrections")
    op.drop_table("tenant_patterns")
