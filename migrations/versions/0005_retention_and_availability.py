"""retention and availability: daily rollup, ingest outages, generation mark, their indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 18:50:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KIND = sa.Enum("training", "notebook", "deployment", name="kind", native_enum=False, length=16)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# (index, table, columns): what retention's deletes and the history window read.
INDEXES = (
    ("ix_transitions_recorded_at", "transitions", ["recorded_at"]),
    ("ix_workloads_state_changed", "workloads", ["state", "state_changed_at"]),
    ("ix_outbox_status_created", "outbox", ["status", "created_at"]),
)


def upgrade() -> None:
    op.create_table(
        "availability_days",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("workload_id", sa.String(length=200), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", KIND, nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.JSON(), nullable=False),
        sa.Column("unheard_s", sa.Float(), nullable=False),
        sa.Column("maintenance_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workload_id", "generation", "day", name="uq_availability_day"),
    )
    op.create_index("ix_availability_days_day", "availability_days", ["day"])
    op.create_table(
        "ingest_outages",
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("started_at"),
    )
    op.create_table(
        "high_water_marks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_table("high_water_marks")
    op.drop_table("ingest_outages")
    op.drop_index("ix_availability_days_day", table_name="availability_days")
    op.drop_table("availability_days")
