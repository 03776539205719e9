"""Workers, leases and step logs (v4, issue 16 part B): the registry of worker processes, which
worker holds which step attempt (``mb_v4_queue_lease``, seed 002), and step logs in the database.

Revision ID: 0008_v4_leases_and_logs
Revises: 0007_v4_runs_idempotency
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_v4_leases_and_logs"
down_revision = "0007_v4_runs_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mb_v4_worker",
        sa.Column("identity", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("task_queue_prefix", sa.String(64), nullable=False),
        sa.Column("pools", sa.JSON(), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("grace_seconds", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "mb_v4_queue_lease",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("step_index", sa.Integer(), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True),
        sa.Column("step_name", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mb_v4_queue_lease_worker", "mb_v4_queue_lease", ["worker"])
    op.create_table(
        "mb_v4_step_log_chunk",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("step_index", sa.Integer(), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("raw_bytes", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # The chunks are zlib already: TOAST them out of line without trying pglz on them again.
        op.execute("ALTER TABLE mb_v4_step_log_chunk ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("mb_v4_step_log_chunk")
    op.drop_index("ix_mb_v4_queue_lease_worker", table_name="mb_v4_queue_lease")
    op.drop_table("mb_v4_queue_lease")
    op.drop_table("mb_v4_worker")
