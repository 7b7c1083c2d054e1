-- The lease table, as a Flyway user ships it (the DDL from the pglock-core jar); the table name is a placeholder
-- so that each test run has its own.

CREATE SEQUENCE IF NOT EXISTS ${pglock_table}_fencing_seq;

CREATE TABLE IF NOT EXISTS ${pglock_table} (
    namespace      text        NOT NULL,            -- keeps services sharing the table apart
    lock_key       text        NOT NULL,
    holders        text[]      NOT NULL,            -- acquisitions holding it (owner#n): one if exclusive, any number if shared, none once released
    shared         boolean     NOT NULL,
    fencing_token  bigint      NOT NULL,            -- grows with every acquisition of the key
    acquired_at    timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,            -- free for anyone once passed
    lease_millis   bigint      NOT NULL,            -- what each heartbeat extends it by
    record_version bigint      NOT NULL DEFAULT 1,  -- +1 on every acquisition and heartbeat
    data           bytea,
    PRIMARY KEY (namespace, lock_key)
);
