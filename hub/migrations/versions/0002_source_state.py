"""source state and poll cursors

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 23:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.records

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('source_state',
    sa.Column('source_id', sa.String(), nullable=False),
    sa.Column('lease_owner', sa.String(), nullable=True),
    sa.Column('lease_until', hub.records.UTCDateTime(timezone=True), nullable=True),
    sa.Column('healthy', sa.Boolean(), nullable=False),
    sa.Column('circuit', sa.String(), nullable=False),
    sa.Column('last_success_at', hub.records.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(), nullable=True),
    sa.Column('last_error_at', hub.records.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lag_seconds', sa.Float(), nullable=True),
    sa.Column('updated_at', hub.records.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source_id')
    )
    op.create_table('source_cursors',
    sa.Column('source_id', sa.String(), nullable=False),
    sa.Column('stream', sa.String(), nullable=False),
    sa.Column('cursor', sa.JSON(), nullable=False),
    sa.Column('updated_at', hub.records.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source_id', 'stream')
    )


def downgrade() -> None:
    op.drop_table('source_cursors')
    op.drop_table('source_state')
