"""outbox claims fenced by a token, per-destination claim index

Each claim stamps its rows with a token; an outcome is written only where the
token still stands, so an attempt that outlived its lease cannot overwrite
what a later claim recorded. Claims are made per destination (each up to its
free slots), along (destination_id, state, next_attempt_at, id); that index
also covers what the destination_id index and the old due index served.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 11:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claim_token', sa.String(), nullable=True))
        batch_op.drop_index('ix_outbox_due')
        batch_op.drop_index('ix_outbox_destination_id')
        batch_op.create_index('ix_outbox_claim', ['destination_id', 'state', 'next_attempt_at', 'id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_claim')
        batch_op.create_index('ix_outbox_destination_id', ['destination_id'], unique=False)
        batch_op.create_index('ix_outbox_due', ['state', 'next_attempt_at', 'id'], unique=False)
        batch_op.drop_column('claim_token')
