"""Baseline: the catalog as the last release before migrations made it.

Revision ID: 0001
Revises:
"""

from alembic import op

from letl.lake.catalog_baseline import BASELINE

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    BASELINE.create_all(op.get_bind())


def downgrade() -> None:
    BASELINE.drop_all(op.get_bind())
