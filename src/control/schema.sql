-- The control schema: the single source of truth for where each migration
-- stands. Created idempotently; the version row lets an older binary refuse
-- a newer layout.
CREATE SCHEMA IF NOT EXISTS repartition;
REVOKE ALL ON SCHEMA repartition FROM PUBLIC;

CREATE TABLE IF NOT EXISTS repartition.meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema_version integer NOT NULL
);
INSERT INTO repartition.meta (singleton, schema_version) VALUES (true, 1) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS repartition.migrations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text NOT NULL,
    method text NOT NULL CHECK (method IN ('move', 'sync', 'attach', 'split')),
    state text NOT NULL DEFAULT 'active'
        CHECK (state IN ('active', 'aborting', 'done', 'aborted')),
    phase text NOT NULL
        CHECK (phase IN ('planned', 'constrained', 'prepared', 'routed', 'backfilled', 'verified', 'moved',
                         'swapped', 'finished')),
    blueprint jsonb NOT NULL,
    plan_source text NOT NULL,
    cursor_block bigint NOT NULL DEFAULT 0,
    sweeps integer NOT NULL DEFAULT 0,
    rows_moved bigint NOT NULL DEFAULT 0,
    rows_total bigint,
    batches bigint NOT NULL DEFAULT 0,
    abort_step text,
    abort_partition integer NOT NULL DEFAULT 0,
    abort_block bigint NOT NULL DEFAULT 0,
    rows_moved_back bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    move_started_at timestamptz,
    finished_at timestamptz,
    last_error text,
    -- Operator controls, read by the runner between batches.
    paused boolean NOT NULL DEFAULT false,
    batch_rows_override bigint CHECK (batch_rows_override > 0),
    pause_ms_override bigint CHECK (pause_ms_override >= 0),
    -- Why the runner waits by itself, while it does.
    throttled text,
    -- Postponed swap: the runner waits for the operator's `migrate swap`.
    waiting_for_swap boolean NOT NULL DEFAULT false,
    swap_requested boolean NOT NULL DEFAULT false
);

-- Columns added since the first layout, for control schemas created by an
-- earlier version; checked first, so that a runner's batches never wait on
-- the ALTER's lock when there is nothing to add.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'repartition.migrations'::regclass
                     AND attname = 'batch_rows_chosen' AND NOT attisdropped) THEN
        ALTER TABLE repartition.migrations ADD COLUMN batch_rows_chosen bigint;
    END IF;
    -- Why the runner paused itself (it waits for `migrate continue`).
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'repartition.migrations'::regclass
                     AND attname = 'paused_reason' AND NOT attisdropped) THEN
        ALTER TABLE repartition.migrations ADD COLUMN paused_reason text;
    END IF;
    -- When and by whom the migration was paused; and the latest section
    -- that took a strong lock on the table, how long it held it and how
    -- long its LOCK waited (for `status` and the metrics).
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'repartition.migrations'::regclass
                     AND attname = 'last_lock_at' AND NOT attisdropped) THEN
        ALTER TABLE repartition.migrations
            ADD COLUMN IF NOT EXISTS paused_at timestamptz,
            ADD COLUMN IF NOT EXISTS paused_by text,
            ADD COLUMN IF NOT EXISTS last_lock_step text,
            ADD COLUMN IF NOT EXISTS last_lock_held_ms float8,
            ADD COLUMN IF NOT EXISTS last_lock_wait_ms float8,
            ADD COLUMN IF NOT EXISTS last_lock_at timestamptz;
    END IF;
    -- The latency budget: the baseline learned before the first batch,
    -- the latest measurement and what the run does about it.
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'repartition.migrations'::regclass
                     AND attname = 'latency_baseline_ms' AND NOT attisdropped) THEN
        ALTER TABLE repartition.migrations
            ADD COLUMN IF NOT EXISTS latency_baseline_ms float8,
            ADD COLUMN IF NOT EXISTS latency_ms float8,
            ADD COLUMN IF NOT EXISTS latency_doing text;
    END IF;
    -- The application's mean transaction time, measured beside the
    -- baseline and over the latest seconds.
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'repartition.migrations'::regclass
                     AND attname = 'latency_app_now_ms' AND NOT attisdropped) THEN
        ALTER TABLE repartition.migrations
            ADD COLUMN IF NOT EXISTS latency_app_ms float8,
            ADD COLUMN IF NOT EXISTS latency_app_now_ms float8;
    END IF;
END $$;

-- One unfinished migration per table.
CREATE UNIQUE INDEX IF NOT EXISTS migrations_one_unfinished
    ON repartition.migrations (table_name) WHERE state IN ('active', 'aborting');

-- One row per committed batch, written in the batch's own transaction:
-- rate and ETA come from here.
CREATE TABLE IF NOT EXISTS repartition.batches (
    migration_id bigint NOT NULL REFERENCES repartition.migrations (id) ON DELETE CASCADE,
    batch_no bigint NOT NULL,
    direction text NOT NULL CHECK (direction IN ('forward', 'back')),
    rows integer NOT NULL,
    from_block bigint NOT NULL,
    to_block bigint NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (migration_id, batch_no)
);

-- Phase changes, retries and errors, for `status` and post-mortems.
CREATE TABLE IF NOT EXISTS repartition.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    migration_id bigint NOT NULL REFERENCES repartition.migrations (id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind text NOT NULL,
    detail text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_migration ON repartition.events (migration_id, at);

-- The latency budget's probe: one row per migration that the probe updates,
-- so that its commit writes WAL and waits for the flush as the
-- application's writes do (a commit that wrote nothing is not flushed).
CREATE TABLE IF NOT EXISTS repartition.latency_probes (
    migration_id bigint PRIMARY KEY REFERENCES repartition.migrations (id) ON DELETE CASCADE,
    probed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- When `maintain` last analyzed a partitioned table as a whole.
CREATE TABLE IF NOT EXISTS repartition.analyzed (
    table_name text PRIMARY KEY,
    at timestamptz NOT NULL
);

-- Partitions that retention is taking out of a table, step by step:
-- detached first (no strong lock on the parent while data is archived or
-- dropped), then archived, then dropped.
CREATE TABLE IF NOT EXISTS repartition.expired_partitions (
    table_name text NOT NULL,
    partition_name text NOT NULL,
    state text NOT NULL CHECK (state IN ('detaching', 'detached', 'archived', 'dropped')),
    archive text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, partition_name)
);
