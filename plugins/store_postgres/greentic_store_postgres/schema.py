"""The database schema and its migrations (pure: SQL text, no connection).

Every table is prefixed ``greentic_`` so the store can share a database with other
applications. ``greentic_schema`` holds one row: the schema version. ``store init`` applies
the migrations after the stored version, in one transaction, under an advisory lock (two
concurrent inits are fine); every other command refuses a database whose version is not
:data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

#: The schema version this plugin reads and writes.
SCHEMA_VERSION = 1

#: ``pg_advisory_xact_lock`` key serialising ``store init`` runs ("greentic" in ASCII).
INIT_LOCK_KEY = 0x677265656E746963

#: version -> statements that bring the schema from ``version - 1`` to ``version``.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        # the environment document as text, exactly as written (key order, unknown fields)
        """CREATE TABLE greentic_environments (
               env_id      text PRIMARY KEY,
               document    text NOT NULL,
               generation  bigint NOT NULL,
               updated_at  timestamptz NOT NULL DEFAULT clock_timestamp())""",
        """CREATE TABLE greentic_runtime_configs (
               env_id      text PRIMARY KEY REFERENCES greentic_environments (env_id),
               document    text NOT NULL)""",
        # one lease per environment; expires and acquired are in the server's clock
        """CREATE TABLE greentic_leases (
               env_id      text PRIMARY KEY,
               holder      text NOT NULL,
               pid         integer NOT NULL,
               command     text NOT NULL,
               acquired    timestamptz NOT NULL,
               expires     timestamptz NOT NULL,
               token       bigint NOT NULL)""",
        "CREATE SEQUENCE greentic_lease_tokens",
        """CREATE TABLE greentic_audit (
               id          bigserial PRIMARY KEY,
               env_id      text NOT NULL,
               event       text NOT NULL)""",
        "CREATE INDEX greentic_audit_by_env ON greentic_audit (env_id, id)",
        # append-only: an UPDATE or DELETE of an audit row is refused by the database itself,
        # except the DELETE of `store migrate --force` replacing an environment (which sets
        # greentic.replace_environment to that environment's id for its own transaction)
        """CREATE FUNCTION greentic_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                 IF TG_OP = 'DELETE' AND OLD.env_id = current_setting('greentic.replace_environment', true) THEN
                   RETURN OLD;
                 END IF;
                 RAISE EXCEPTION 'greentic_audit is append-only';
               END $$""",
        """CREATE TRIGGER greentic_audit_append_only BEFORE UPDATE OR DELETE ON greentic_audit
               FOR EACH ROW EXECUTE FUNCTION greentic_audit_append_only()""",
        """CREATE TABLE greentic_backups (
               id          bigserial PRIMARY KEY,
               env_id      text NOT NULL,
               generation  bigint NOT NULL,
               taken_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
               document    text NOT NULL)""",
        "CREATE INDEX greentic_backups_by_env ON greentic_backups (env_id, id)",
        """CREATE TABLE greentic_attachments (
               env_id      text NOT NULL,
               name        text NOT NULL,
               data        bytea NOT NULL,
               PRIMARY KEY (env_id, name))""",
    ),
}

CREATE_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS greentic_schema (
    id       integer PRIMARY KEY CHECK (id = 1),
    version  integer NOT NULL)"""


def pending(current: int) -> list[tuple[int, tuple[str, ...]]]:
    """The migrations to apply to a database at version ``current`` (0: empty), in order."""
    return [(version, MIGRATIONS[version]) for version in sorted(MIGRATIONS) if version > current]
