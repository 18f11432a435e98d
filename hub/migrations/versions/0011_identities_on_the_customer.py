"""A customer's identities are kept on its row; the index by customer goes

The pipeline reads every identity of the customers a batch touches (pushes
carry them) and, for a customer it has seen before, often adds one (a new
phone). Along the index ``(customer_id, kind, value)`` each such identity
landed at a random place in a full page: with a million customers it split
the page, ~2 pages written an event — the largest share of what a seeded
database wrote beyond an empty one. ``customers.identities`` now holds them
as ``[[id, kind, value], …]`` in id order: read with the customer, changed
on a row that the event writes anyway. Merges move identities by their ids.
``customer_identities`` keeps its unique ``(kind, value)`` index, the lookup
that finds a customer.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 00:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN and DROP INDEX are plain statements on both databases (no batch
    # copy of the table); the backfill reads along the old index before it goes.
    op.add_column('customers', sa.Column('identities', sa.JSON(), nullable=True))
    if op.get_bind().dialect.name == 'sqlite':
        op.execute("UPDATE customers SET identities = (SELECT json_group_array(json_array(i.id, i.kind, i.value)) "
                   "FROM (SELECT id, kind, value FROM customer_identities "
                   "WHERE customer_id = customers.id ORDER BY id) AS i)")
    else:
        op.execute("UPDATE customers SET identities = COALESCE((SELECT json_agg(json_build_array(i.id, i.kind, i.value) "
                   "ORDER BY i.id) FROM customer_identities AS i WHERE i.customer_id = customers.id), '[]'::json)")
    op.drop_index('ix_customer_identities_customer', table_name='customer_identities')


def downgrade() -> None:
    op.create_index('ix_customer_identities_customer', 'customer_identities', ['customer_id', 'kind', 'value'])
    with op.batch_alter_table('customers') as batch:
        batch.drop_column('identities')
