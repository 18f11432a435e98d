"""outbox due index in claim order

A claim takes the longest-due rows first (next_attempt_at, then id). With id
in the index the scan yields rows in exactly that order and stops at the batch
size, on PostgreSQL as on SQLite (whose indexes end in the rowid anyway).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 02:40:00
"""
from __future__ import annotations

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_due')
        batch_op.create_index('ix_outbox_due', ['state', 'next_attempt_at', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_due')
        batch_op.create_index('ix_outbox_due', ['state', 'next_attempt_at'], unique=False)
