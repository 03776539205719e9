"""Replay bundles (v4): every step's tool I/O, LLM exchange and patch review of a run, with
content-addressed blobs.

Revision ID: 0009_v4_replay_bundle
Revises: 0008_v4_leases_and_logs
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_v4_replay_bundle"
down_revision = "0008_v4_leases_and_logs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mb_v4_replay_blob",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mb_v4_replay_bundle",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("step_name", sa.String(64), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("blobs", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "key", name="uq_mb_v4_replay_bundle_key"),
    )
    op.create_index("ix_mb_v4_replay_bundle_run_id", "mb_v4_replay_bundle", ["run_id"])


def downgrade() -> None:
    op.drop_table("mb_v4_replay_bundle")
    op.drop_table("mb_v4_replay_blob")
