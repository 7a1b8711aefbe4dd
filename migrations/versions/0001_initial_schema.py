"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-24 05:08:35.479245+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('transition_id', sa.BigInteger(), nullable=False),
    sa.Column('workload_id', sa.String(length=200), nullable=False),
    sa.Column('target', sa.Enum('main', 'alert', name='outbox_target', native_enum=False, length=16), nullable=False),
    sa.Column('destination', sa.Text(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'synced', 'dead', name='outbox_status', native_enum=False, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.Text(), nullable=True),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('synced_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('transition_id', 'target', 'destination', name='uq_outbox_transition_target')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_outbox_workload_order', ['target', 'workload_id', 'transition_id'], unique=False)

    op.create_table('refused_observations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('workload_id', sa.String(length=200), nullable=False),
    sa.Column('current_state', sa.Enum('PENDING', 'STARTING', 'DEPLOYING', 'RUNNING', 'READY', 'IDLE', 'DEGRADED', 'STOPPING', 'SUCCEEDED', 'FAILED', 'STOPPED', 'UNREACHABLE', 'LOST', name='state', native_enum=False, length=16), nullable=False),
    sa.Column('requested_state', sa.String(length=32), nullable=False),
    sa.Column('source', sa.Enum('push', 'pull', 'api', 'sweeper', name='source', native_enum=False, length=16), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=True),
    sa.Column('rule', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('seq', sa.BigInteger(), nullable=True),
    sa.Column('workload_version', sa.Integer(), nullable=False),
    sa.Column('observed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('refused_observations', schema=None) as batch_op:
        batch_op.create_index('ix_refused_workload_id_id', ['workload_id', 'id'], unique=False)

    op.create_table('transitions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('workload_id', sa.String(length=200), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('training', 'notebook', 'deployment', name='kind', native_enum=False, length=16), nullable=False),
    sa.Column('from_state', sa.Enum('PENDING', 'STARTING', 'DEPLOYING', 'RUNNING', 'READY', 'IDLE', 'DEGRADED', 'STOPPING', 'SUCCEEDED', 'FAILED', 'STOPPED', 'UNREACHABLE', 'LOST', name='state', native_enum=False, length=16), nullable=False),
    sa.Column('to_state', sa.Enum('PENDING', 'STARTING', 'DEPLOYING', 'RUNNING', 'READY', 'IDLE', 'DEGRADED', 'STOPPING', 'SUCCEEDED', 'FAILED', 'STOPPED', 'UNREACHABLE', 'LOST', name='state', native_enum=False, length=16), nullable=False),
    sa.Column('source', sa.Enum('push', 'pull', 'api', 'sweeper', name='source', native_enum=False, length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('actor', sa.String(length=200), nullable=True),
    sa.Column('seq', sa.BigInteger(), nullable=True),
    sa.Column('observed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('transitions', schema=None) as batch_op:
        batch_op.create_index('ix_transitions_workload_id_id', ['workload_id', 'id'], unique=False)

    op.create_table('workloads',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.Enum('training', 'notebook', 'deployment', name='kind', native_enum=False, length=16), nullable=False),
    sa.Column('state', sa.Enum('PENDING', 'STARTING', 'DEPLOYING', 'RUNNING', 'READY', 'IDLE', 'DEGRADED', 'STOPPING', 'SUCCEEDED', 'FAILED', 'STOPPED', 'UNREACHABLE', 'LOST', name='state', native_enum=False, length=16), nullable=False),
    sa.Column('prior_state', sa.Enum('PENDING', 'STARTING', 'DEPLOYING', 'RUNNING', 'READY', 'IDLE', 'DEGRADED', 'STOPPING', 'SUCCEEDED', 'FAILED', 'STOPPED', 'UNREACHABLE', 'LOST', name='state', native_enum=False, length=16), nullable=True),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('status_url', sa.Text(), nullable=True),
    sa.Column('last_seq', sa.BigInteger(), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('state_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('poll_failures', sa.Integer(), nullable=False),
    sa.Column('last_poll_error', sa.Text(), nullable=True),
    sa.Column('last_poll_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('workloads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workloads_deleted_at'), ['deleted_at'], unique=False)
        batch_op.create_index('ix_workloads_kind_state', ['kind', 'state'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('workloads', schema=None) as batch_op:
        batch_op.drop_index('ix_workloads_kind_state')
        batch_op.drop_index(batch_op.f('ix_workloads_deleted_at'))

    op.drop_table('workloads')
    with op.batch_alter_table('transitions', schema=None) as batch_op:
        batch_op.drop_index('ix_transitions_workload_id_id')

    op.drop_table('transitions')
    with op.batch_alter_table('refused_observations', schema=None) as batch_op:
        batch_op.drop_index('ix_refused_workload_id_id')

    op.drop_table('refused_observations')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_workload_order')
        batch_op.drop_index('ix_outbox_due')

    op.drop_table('outbox')
