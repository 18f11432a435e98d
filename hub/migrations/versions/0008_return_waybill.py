"""tickets carry the buyer's return waybill; orders their payment reference

When the buyer ships the goods back, the platform tells the carrier and the
waybill number (Taobao ``company_name``/``sid``, WeChat ``return_info``); the
warehouse matches the parcel by it and the ERP records it (``l_id``). Finance
pays a refund back against the order's payment (Alipay/WeChat Pay transaction
number), so orders keep that reference.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 21:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('return_carrier', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('return_waybill', sa.String(), nullable=True))
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pay_reference', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('pay_reference')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_column('return_waybill')
        batch_op.drop_column('return_carrier')
