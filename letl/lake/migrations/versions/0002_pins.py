"""Pins: a version, or an asset's latest versions, held on a tier that the placement policy leaves alone.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pins",
        sa.Column("target", sa.String(640), primary_key=True),
        sa.Column("asset_key", sa.String(255), nullable=False),
        sa.Column("branch", sa.String(128), nullable=False),
        sa.Column("partition", sa.String(128)),
        sa.Column("version_id", sa.String(64), sa.ForeignKey("versions.version_id")),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("pinned_by", sa.String(128)),
        sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_pins_asset", "pins", ["asset_key", "branch"])


def downgrade() -> None:
    op.drop_index("ix_pins_asset", table_name="pins")
    op.drop_table("pins")
