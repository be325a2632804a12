"""Items and reviews: the schema seglab wrote before it had migrations.

A database written by that version already has these tables; they are kept as they are
(with their rows) and the database is marked as being at this revision.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "items" not in have:
        op.create_table(
            "items",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("kind", sa.String(16), nullable=False, index=True),
            sa.Column("batch", sa.String(32), nullable=False, index=True),
            sa.Column("model", sa.String(200), nullable=False),
            sa.Column("filename", sa.String(255), nullable=False),
            sa.Column("width", sa.Integer, nullable=False),
            sa.Column("height", sa.Integer, nullable=False),
            sa.Column("verdict", sa.Boolean, nullable=False),
            sa.Column("score", sa.Float, nullable=False),
            sa.Column("result", sa.JSON, nullable=False),
            sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        )
    if "reviews" not in have:
        op.create_table(
            "reviews",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("item_id", sa.String(32), sa.ForeignKey("items.id"), nullable=False,
                      index=True),
            sa.Column("verdict", sa.Boolean, nullable=False),
            sa.Column("agrees", sa.Boolean, nullable=False),
            sa.Column("reviewer", sa.String(100), nullable=False),
            sa.Column("note", sa.String(1000), nullable=False),
            sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("reviews")
    op.drop_table("items")
