"""The schema as `create_all` made it before migrations: create it, or adopt it.

A database made by an earlier release (tables created at start-up, no
`alembic_version`) is adopted in place: every table that exists is kept with its
rows, only what is missing is created, and the database is then at this revision
like any other. So no `alembic stamp` is needed, and an empty database goes
through the very same code.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the types in app/store/sql.py: a revision must not change when
# the models do. INTEGER on SQLite, where only an INTEGER PRIMARY KEY is the rowid.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    bind = op.get_bind()
    # SqlStore(schema=...) redirects the tables with a schema_translate_map: look there.
    schema = bind.get_execution_options().get("schema_translate_map", {}).get(None)
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names(schema=schema))
    # One create_table per table, written out as Alembic writes them: a migration is
    # frozen history, read table by table, so the alike blocks below stay apart.
    if "users" not in existing:
        op.create_table(
            "users",
            sa.Column("id", ID, sa.Identity(), nullable=False),
            sa.Column("name", sa.String(100), nullable=False),
            sa.Column("email", sa.String(320), nullable=False),
            sa.Column("role", sa.String(20), server_default="user", nullable=False),
            sa.Column("password_hash", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("id", name="pk_users"),
            # AUTOINCREMENT: a deleted user's id never comes back.
            sqlite_autoincrement=True,
        )
        op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)
    if "audit_events" not in existing:
        op.create_table(
            "audit_events",
            sa.Column("id", ID, sa.Identity(), nullable=False),
            sa.Column("action", sa.String(50), nullable=False),
            sa.Column("user_id", sa.BigInteger(), nullable=False),
            sa.Column("at", UTC_DATETIME, nullable=False),
            sa.Column("actor_id", sa.BigInteger(), nullable=True),
            sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
            sqlite_autoincrement=True,
        )
    else:
        columns = {column["name"] for column in inspector.get_columns("audit_events", schema)}
        if "actor_id" not in columns:
            # Releases before it created audit_events without the actor.
            op.add_column("audit_events", sa.Column("actor_id", sa.BigInteger(), nullable=True))
    if "refresh_tokens" not in existing:
        op.create_table(
            "refresh_tokens",
            sa.Column("jti", sa.String(128), nullable=False),
            sa.Column("family", sa.String(128), nullable=False),
            sa.Column("user_id", sa.String(64), nullable=False),
            sa.Column("expires_at", UTC_DATETIME, nullable=False),
            sa.Column("used_at", UTC_DATETIME, nullable=True),
            sa.PrimaryKeyConstraint("jti", name="pk_refresh_tokens"),
        )
        op.create_index("ix_refresh_tokens_family", "refresh_tokens", ["family"])
        op.create_index("ix_refresh_tokens_expires_at", "refresh_tokens", ["expires_at"])
    if "revoked_families" not in existing:
        op.create_table(
            "revoked_families",
            sa.Column("family", sa.String(128), nullable=False),
            sa.Column("revoked_at", UTC_DATETIME, nullable=False),
            sa.PrimaryKeyConstraint("family", name="pk_revoked_families"),
        )
    if "revoked_access_tokens" not in existing:
        op.create_table(
            "revoked_access_tokens",
            sa.Column("jti", sa.String(128), nullable=False),
            sa.Column("expires_at", UTC_DATETIME, nullable=False),
            sa.PrimaryKeyConstraint("jti", name="pk_revoked_access_tokens"),
        )
        op.create_index(
            "ix_revoked_access_tokens_expires_at", "revoked_access_tokens", ["expires_at"]
        )
    if "session_marks" not in existing:
        op.create_table(
            "session_marks",
            sa.Column("user_id", sa.String(64), nullable=False),
            sa.Column("valid_from", UTC_DATETIME, nullable=False),
            sa.PrimaryKeyConstraint("user_id", name="pk_session_marks"),
        )
        op.create_index("ix_session_marks_valid_from", "session_marks", ["valid_from"])


def downgrade() -> None:
    for table in (
        "session_marks",
        "revoked_access_tokens",
        "revoked_families",
        "refresh_tokens",
        "audit_events",
        "users",
    ):
        op.drop_table(table)
