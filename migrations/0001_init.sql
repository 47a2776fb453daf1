-- The contract tables of SPEC.md plus the replicator's bookkeeping.
-- The runner creates schema neon_auth before this file runs.

-- Staging table: the only table in the publication.
CREATE TABLE neon_auth.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider    text        NOT NULL,
    event_type  text        NOT NULL,
    payload     jsonb       NOT NULL,
    event_id    text,
    occurred_at timestamptz,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- A redelivered webhook carries the same delivery id: INSERT ... ON CONFLICT DO NOTHING.
CREATE UNIQUE INDEX outbox_provider_event_id_key ON neon_auth.outbox (provider, event_id);

-- Drop-in for Neon Auth's table: exactly these seven columns, in this order.
CREATE TABLE neon_auth.users_sync (
    id         text PRIMARY KEY,
    name       text,
    email      text,
    created_at timestamptz,
    updated_at timestamptz,
    deleted_at timestamptz,
    raw_json   jsonb NOT NULL
);
CREATE INDEX users_sync_deleted_at_idx ON neon_auth.users_sync (deleted_at);

-- One audit row per applied outbox event.
CREATE TABLE neon_auth.users_sync_history (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id             text        NOT NULL,
    operation           text        NOT NULL CHECK (operation IN ('insert', 'update', 'delete', 'stale')),
    outbox_id           bigint      NOT NULL UNIQUE,
    provider            text        NOT NULL,
    event_type          text        NOT NULL,
    event_id            text,
    occurred_at         timestamptz NOT NULL,
    before              jsonb,
    after               jsonb,
    source_lsn          pg_lsn,
    source_committed_at timestamptz,
    applied_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_sync_history_user_id_idx ON neon_auth.users_sync_history (user_id, id);

-- One row per outbox event that could not be folded.
CREATE TABLE neon_auth.outbox_rejects (
    outbox_id   bigint PRIMARY KEY,
    provider    text,
    event_type  text,
    payload     jsonb,
    error       text        NOT NULL,
    source_lsn  pg_lsn,
    rejected_at timestamptz NOT NULL DEFAULT now()
);

-- The fold's two last-writer-wins registers per user, keyed by (occurred_at, outbox_id).
-- profile_*: the user.created/user.updated event whose content users_sync shows.
-- last_*: the greatest event of any type; deleted_at is set when it is a user.deleted.
CREATE TABLE neon_auth.users_sync_state (
    user_id           text PRIMARY KEY,
    profile_at        timestamptz,
    profile_outbox_id bigint,
    last_at           timestamptz NOT NULL,
    last_outbox_id    bigint      NOT NULL
);

-- Replication checkpoint, one row per slot. lsn is the end of the last source
-- transaction whose fold committed; generation fences a paused old instance:
-- every apply is a compare-and-set on the generation its owner took.
-- catchup_epoch is bumped (and committed) before the slot is (re)created, and
-- caught_up_epoch records the epoch the last complete catch-up saw, so a
-- catch-up that a crash or a takeover interrupted is still owed.
CREATE TABLE neon_auth.replicator_checkpoint (
    slot_name       text PRIMARY KEY,
    lsn             pg_lsn      NOT NULL DEFAULT '0/0',
    generation      bigint      NOT NULL DEFAULT 0,
    catchup_epoch   bigint      NOT NULL DEFAULT 0,
    caught_up_epoch bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
