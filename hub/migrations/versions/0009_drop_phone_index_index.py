"""customers.phone_index is no longer indexed

The column (a keyed hash of the customer's phone) tells the pipeline whether
an event brings a new number without decrypting the stored one; customers
are looked up by phone through ``customer_identities`` (kind ``phone``), which
has its own unique index. Nothing searched along this index, and every new
customer and every changed phone wrote a row into it at a random place — with
a million customers, a page read and written per new customer.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:00:00
"""
from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain DROP INDEX on both databases (no batch copy of the table).
    op.drop_index('ix_customers_phone_index', table_name='customers')


def downgrade() -> None:
    op.create_index('ix_customers_phone_index', 'customers', ['phone_index'], unique=False)
