"""outbox_event_key: every outbox row names its event; rows are ordered by id

An outbox row is identified by (event_key, target, destination) instead of a transition id, so
events no transition caused (statusd's own disruption alerts) need no invented transition id or
workload id: their transition_id is NULL and their ordering group is the workload id "".
Existing rows: a transition's rows get `transition:<id>`; disruption rows (workload
'statusd/disruption', transition id 2^60 + the flip's unix milliseconds) get `disruption:<ms>`.
Delivery order within (target, workload_id, destination) is the rows' id order, which is the
transition order for a workload's rows (each transition wrote its rows under the workload's lock).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 18:40:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# How the rows of disruption alerts were told apart before this revision.
OLD_DISRUPTION_WORKLOAD = "statusd/disruption"
OLD_DISRUPTION_ID_BASE = 1 << 60
STATUSD_EVENTS = ""
DISRUPTION_PREFIX = "disruption:"


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_key", sa.String(length=200), nullable=True))
        batch_op.alter_column("transition_id", existing_type=sa.BigInteger(), nullable=True)
    op.execute(
        sa.text(
            "UPDATE outbox SET event_key = :prefix || CAST(transition_id - :base AS VARCHAR(20)),"
            " transition_id = NULL, workload_id = :statusd WHERE workload_id = :old"
        ).bindparams(
            prefix=DISRUPTION_PREFIX,
            base=OLD_DISRUPTION_ID_BASE,
            statusd=STATUSD_EVENTS,
            old=OLD_DISRUPTION_WORKLOAD,
        )
    )
    op.execute(
        sa.text(
            "UPDATE outbox SET event_key = 'transition:' || CAST(transition_id AS VARCHAR(20))"
            " WHERE event_key IS NULL"
        )
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column("event_key", existing_type=sa.String(length=200), nullable=False)
        batch_op.drop_constraint("uq_outbox_transition_target", type_="unique")
        batch_op.create_unique_constraint(
            "uq_outbox_event_target", ["event_key", "target", "destination"]
        )
        batch_op.drop_index("ix_outbox_workload_order")
        batch_op.create_index(
            "ix_outbox_workload_order", ["target", "workload_id", "id"], unique=False
        )


def downgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE outbox SET workload_id = :old, transition_id = :base"
            " + CAST(SUBSTR(event_key, :start) AS BIGINT) WHERE transition_id IS NULL"
        ).bindparams(
            old=OLD_DISRUPTION_WORKLOAD,
            base=OLD_DISRUPTION_ID_BASE,
            start=len(DISRUPTION_PREFIX) + 1,
        )
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_workload_order")
        batch_op.create_index(
            "ix_outbox_workload_order", ["target", "workload_id", "transition_id"], unique=False
        )
        batch_op.drop_constraint("uq_outbox_event_target", type_="unique")
        batch_op.create_unique_constraint(
            "uq_outbox_transition_target", ["transition_id", "target", "destination"]
        )
        batch_op.alter_column("transition_id", existing_type=sa.BigInteger(), nullable=False)
        batch_op.drop_column("event_key")
