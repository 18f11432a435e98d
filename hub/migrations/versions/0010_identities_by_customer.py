"""A customer's identities are read from one index

The pipeline reads every identity of the customers a batch touches (pushes
carry them). Along ``(customer_id)`` alone each identity then cost a read of
its table page too — with a million customers, pages at random places, one
or two an event. ``(customer_id, kind, value)`` holds what is read (the row
id is every index's own), so the search never leaves the index; lookups and
moves by customer use it as they used the old one.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 20:30:00
"""
from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain CREATE / DROP INDEX on both databases (no batch copy of the table).
    op.create_index('ix_customer_identities_customer', 'customer_identities', ['customer_id', 'kind', 'value'])
    op.drop_index('ix_customer_identities_customer_id', table_name='customer_identities')


def downgrade() -> None:
    op.create_index('ix_customer_identities_customer_id', 'customer_identities', ['customer_id'])
    op.drop_index('ix_customer_identities_customer', table_name='customer_identities')
