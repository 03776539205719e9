"""Promote (v4): the branch of the user's checkout a run started from, where promote moves it.

Revision ID: 0018_v4_run_source_branch
Revises: 0013_v4_run_budget
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0018_v4_run_source_branch"
down_revision = "0017_v4_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("build_runs") as batch:
        batch.add_column(sa.Column("source_branch", sa.String(200), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("build_runs") as batch:
        batch.drop_column("source_branch")
