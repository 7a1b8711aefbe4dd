"""silences: operator silences of alerts (POST /v1/silences), kept across Redis flushes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 19:40:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KIND = sa.Enum("training", "notebook", "deployment", name="kind", native_enum=False, length=16)


def upgrade() -> None:
    op.create_table(
        "silences",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("match_kind", KIND, nullable=True),
        sa.Column("match_label_key", sa.String(length=100), nullable=True),
        sa.Column("match_label_value", sa.String(length=500), nullable=True),
        sa.Column("match_id", sa.String(length=200), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("silences", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_silences_until"), ["until"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("silences", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_silences_until"))
    op.drop_table("silences")
