"""tickets carry flags

What a callback reports that the hub must not accept silently (a partial
receipt, damaged goods, a refund that differs) is flagged on the ticket, for
the API, the dashboard and every later push.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 19:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('flags', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('flags')
