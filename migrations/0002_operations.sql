-- Operations: erasure, resync, and the epoch that out-of-band writers bump.

-- Users erased with `replicator forget`. An event for one of them that
-- arrives later (a retried webhook) is recorded in history as 'forgotten',
-- with its payload redacted, and never brings the user back.
CREATE TABLE neon_auth.forgotten_users (
    user_id      text PRIMARY KEY,
    forgotten_at timestamptz NOT NULL DEFAULT now(),
    reason       text        NOT NULL
);

-- 'resync': a repair by `replicator resync`, which folds no outbox event, so
-- only such rows may lack an outbox_id, provider and event_type.
-- 'forgotten': an event for a forgotten user, recorded without before/after.
ALTER TABLE neon_auth.users_sync_history
    DROP CONSTRAINT users_sync_history_operation_check,
    ADD CONSTRAINT users_sync_history_operation_check
        CHECK (operation IN ('insert', 'update', 'delete', 'stale', 'resync', 'forgotten')),
    ALTER COLUMN outbox_id DROP NOT NULL,
    ALTER COLUMN provider DROP NOT NULL,
    ALTER COLUMN event_type DROP NOT NULL,
    ADD CONSTRAINT users_sync_history_event_check
        CHECK (operation = 'resync' OR (outbox_id IS NOT NULL AND provider IS NOT NULL AND event_type IS NOT NULL));

-- Bumped by every writer of users_sync, users_sync_state or history other
-- than the apply (resync, forget), under the apply's fold lock: an apply
-- that caches users' fold state drops its cache when it sees it change.
ALTER TABLE neon_auth.replicator_checkpoint
    ADD COLUMN external_epoch bigint NOT NULL DEFAULT 0;
