"""orders findable by their number alone

A caller who keys in an order number names an order of any channel
(``match: any_channel``); the pipeline looks those up for a whole batch at
once by ``external_id``, which the (channel, external_id) unique index cannot
serve without knowing the channel.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:00:00
"""
from __future__ import annotations

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('ix_orders_external_id', ['external_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_external_id')
