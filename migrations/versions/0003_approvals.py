"""Approval gates, users and API tokens, and run iterations and settings.

Revision ID: 0003_approvals
Revises: 0002_autofix
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0003_approvals"
down_revision = "0002_autofix"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("build_runs") as batch:
        batch.add_column(sa.Column("iteration", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("retry_of", sa.String(64), nullable=True))
        batch.add_column(sa.Column("settings", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("next_overrides", sa.JSON(), nullable=False, server_default="{}"))
        batch.create_index("ix_build_runs_retry_of", ["retry_of"])
    op.create_table(
        "approval_gates",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("build_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("step_name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("signal_type", sa.String(50), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("deciders", sa.JSON(), nullable=False),
        sa.Column("on_expiry", sa.String(16), nullable=False),
        _ts("opened_at"), _ts("expires_at"),
        sa.Column("decided_by", sa.String(200), nullable=True),
        _ts("decided_at", nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_approval_gates_run_id", "approval_gates", ["run_id"])
    op.create_index("ix_approval_gates_tenant_id", "approval_gates", ["tenant_id"])
    op.create_index("ix_approval_gates_status", "approval_gates", ["status"])
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        _ts("created_at"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_users_tenant_name"),
    )
    op.create_index("ix_users_tenant_id", "users", ["tenant_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        _ts("created_at"), _ts("last_used_at", nullable=True), _ts("revoked_at", nullable=True),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_table("approval_gates")
    with op.batch_alter_table("build_runs") as batch:
        batch.drop_index("ix_build_runs_retry_of")
        for col in ("next_overrides", "settings", "retry_of", "iteration"):
            batch.drop_column(col)
