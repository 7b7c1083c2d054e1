-- The sample's own tables (pglock's lease table is created by pglock). Replicas may start at the
-- same moment, and two CREATE TABLE IF NOT EXISTS of one table can still collide: the script is one
-- statement (spring.sql.init.separator is set so that Spring never splits it), a DO block whose
-- transaction-level advisory lock serialises it and ends with its own transaction. A session-level
-- lock here would outlive the script on a pooled connection if anything went wrong before its unlock.
DO $$
BEGIN
PERFORM pg_advisory_xact_lock(7172);
CREATE TABLE IF NOT EXISTS sample_invoice (
    run_id        text   NOT NULL,
    id            bigint NOT NULL,
    amount_cents  bigint NOT NULL,
    paid_by       text,
    fencing_token bigint,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE IF NOT EXISTS sample_payment (
    run_id     text        NOT NULL,
    invoice_id bigint      NOT NULL,
    replica    text        NOT NULL,
    paid_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- When the payment began under the invoice's lock (the demo's timeline draws it); added for tables made before.
ALTER TABLE sample_payment ADD COLUMN IF NOT EXISTS started_at timestamptz;
CREATE TABLE IF NOT EXISTS sample_tick (
    run_id  text        NOT NULL,
    tick    bigint      NOT NULL,
    replica text        NOT NULL,
    ran_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE sample_tick ADD COLUMN IF NOT EXISTS ended_at timestamptz;  -- when the job's work ended
CREATE TABLE IF NOT EXISTS sample_fire (
    run_id   text        NOT NULL,
    tick     bigint      NOT NULL,
    replica  text        NOT NULL,
    fired_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS sample_report (
    run_id        text PRIMARY KEY,
    content       text,
    fencing_token bigint NOT NULL,
    built_by      text
);
CREATE TABLE IF NOT EXISTS sample_report_access (
    run_id     text        NOT NULL,
    replica    text        NOT NULL,
    kind       text        NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL
);
END
$$;
