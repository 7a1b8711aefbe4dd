"""maintenances: planned maintenance windows (POST /v1/maintenances), one-off or recurring

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 22:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KIND = sa.Enum("training", "notebook", "deployment", name="kind", native_enum=False, length=16)


def upgrade() -> None:
    op.create_table(
        "maintenances",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("match_kind", KIND, nullable=True),
        sa.Column("match_label_key", sa.String(length=100), nullable=True),
        sa.Column("match_label_value", sa.String(length=500), nullable=True),
        sa.Column("match_id", sa.String(length=200), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("schedule", sa.String(length=200), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("maintenances")
