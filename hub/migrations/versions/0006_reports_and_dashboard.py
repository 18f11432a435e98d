"""tickets by creation time, paused sources, backlog samples

Reports and exports over a period read the tickets created in it
(``ix_tickets_created_at``); an operator may pause a polled source
(``source_state.paused``) and sees its quota use; the dashboard charts the backlog over time from
one row a minute (``backlog_samples``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 18:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.records import UTCDateTime

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index('ix_tickets_created_at', ['created_at'], unique=False)
    with op.batch_alter_table('source_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('paused', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('quota_calls_per_minute', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('quota_limit_per_minute', sa.Float(), nullable=True))
    op.create_table(
        'backlog_samples',
        sa.Column('minute', UTCDateTime(timezone=True), nullable=False),
        sa.Column('received', sa.Integer(), nullable=False),
        sa.Column('inbox_pending', sa.Integer(), nullable=False),
        sa.Column('quarantined', sa.Integer(), nullable=False),
        sa.Column('pushes', sa.Integer(), nullable=False),
        sa.Column('outbox_pending', sa.Integer(), nullable=False),
        sa.Column('dead', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('minute'),
    )


def downgrade() -> None:
    op.drop_table('backlog_samples')
    with op.batch_alter_table('source_state', schema=None) as batch_op:
        batch_op.drop_column('quota_limit_per_minute')
        batch_op.drop_column('quota_calls_per_minute')
        batch_op.drop_column('paused')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_created_at')
