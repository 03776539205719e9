"""A gate's proposed patch: the diff a person sees and approving applies.

Revision ID: 0005_gate_proposals
Revises: 0004_classifier_knowledge
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_gate_proposals"
down_revision = "0004_classifier_knowledge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approval_gates") as batch:
        batch.add_column(sa.Column("proposal", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approval_gates") as batch:
        batch.drop_column("proposal")
