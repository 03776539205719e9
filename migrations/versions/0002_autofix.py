"""Self-healing: auto_fix_runs, retry_states, repair_attempts, plan_deltas, audit_events,
tenant_settings, and the classification of each step attempt.

Revision ID: 0002_autofix
Revises: 0001_initial
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_autofix"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_TS = {"nullable": False}


def upgrade() -> None:
    with op.batch_alter_table("build_steps") as batch:
        batch.add_column(sa.Column("signal_type", sa.String(32), nullable=True))
        batch.add_column(sa.Column("confidence", sa.Float(), nullable=True))
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        batch.add_column(sa.Column("backoff_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("retry_after_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("evidence", sa.Text(), nullable=False, server_default=""))
    run_fk = {"ondelete": "CASCADE"}
    op.create_table(
        "auto_fix_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("build_runs.id", **run_fk), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step_name", sa.String(64), nullable=False),
        sa.Column("signal_type", sa.String(50), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("strategy", sa.String(50), nullable=False),
        sa.Column("outcome", sa.String(50), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("backoff", sa.Float(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), **_TS),
        sa.Column("updated_at", sa.DateTime(timezone=True), **_TS),
        sa.UniqueConstraint("run_id", "seq", name="uq_auto_fix_runs_seq"),
    )
    op.create_index("ix_auto_fix_runs_run_id", "auto_fix_runs", ["run_id"])
    op.create_table(
        "retry_states",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("build_runs.id", **run_fk), nullable=False, unique=True),
        sa.Column("attempt_counter", sa.Integer(), nullable=False),
        sa.Column("per_step_attempts", sa.JSON(), nullable=False),
        sa.Column("total_attempts", sa.Integer(), nullable=False),
        sa.Column("last_backoff_seconds", sa.Float(), nullable=True),
        sa.Column("max_total_attempts", sa.Integer(), nullable=False),
        sa.Column("max_per_step_attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), **_TS),
        sa.Column("updated_at", sa.DateTime(timezone=True), **_TS),
    )
    op.create_table(
        "repair_attempts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("build_runs.id", **run_fk), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("step_name", sa.String(64), nullable=False),
        sa.Column("signal_type", sa.String(50), nullable=False),
        sa.Column("fixer", sa.String(50), nullable=False),
        sa.Column("outcome", sa.String(50), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("diff", sa.Text(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("commit_before", sa.String(64), nullable=False),
        sa.Column("commit_after", sa.String(64), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), **_TS),
        sa.UniqueConstraint("run_id", "seq", name="uq_repair_attempts_seq"),
    )
    op.create_index("ix_repair_attempts_run_id", "repair_attempts", ["run_id"])
    op.create_table(
        "plan_deltas",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("original_plan_id", sa.String(36), sa.ForeignKey("scaffold_plans.id"), nullable=False),
        sa.Column("new_plan_id", sa.String(36), sa.ForeignKey("scaffold_plans.id"), nullable=False),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("build_runs.id", **run_fk), nullable=False),
        sa.Column("delta_data", sa.JSON(), nullable=False),
        sa.Column("triggered_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), **_TS),
    )
    op.create_index("ix_plan_deltas_run_id", "plan_deltas", ["run_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), **_TS),
    )
    for col in ("tenant_id", "run_id", "event"):
        op.create_index(f"ix_audit_events_{col}", "audit_events", [col])
    op.create_table(
        "tenant_settings",
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("autofix", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), **_TS),
    )


def downgrade() -> None:
    for table in ("tenant_settings", "audit_events", "plan_deltas", "repair_attempts", "retry_states",
                  "auto_fix_runs"):
        op.drop_table(table)
    with op.batch_alter_table("build_steps") as batch:
        for col in ("evidence", "retry_after_seconds", "backoff_seconds", "fingerprint", "confidence",
                    "signal_type"):
            batch.drop_column(col)
