"""workload parent: dependencies (a child's alerts held while its parent is down)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 22:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # A parent is named by id, not a foreign key: the link outlives the parent's deregistration
    # (a re-registered parent is the same parent again). Batch mode: SQLite drops a column only
    # by rebuilding the table; PostgreSQL runs plain ALTERs.
    with op.batch_alter_table("workloads") as batch:
        batch.add_column(sa.Column("parent", sa.String(length=200), nullable=True))
        batch.create_index("ix_workloads_parent", ["parent"])
    # One row per child whose unreachable/lost alert is held by its parent (the child's newest
    # held transition), until the parent recovers or proves alive.
    op.create_table(
        "held_alerts",
        sa.Column("workload_id", sa.String(length=200), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("parent", sa.String(length=200), nullable=False),
        sa.Column("transition_id", BIGID, nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workload_id"),
    )
    op.create_index("ix_held_alerts_parent", "held_alerts", ["parent"])


def downgrade() -> None:
    op.drop_index("ix_held_alerts_parent", table_name="held_alerts")
    op.drop_table("held_alerts")
    with op.batch_alter_table("workloads") as batch:
        batch.drop_index("ix_workloads_parent")
        batch.drop_column("parent")
