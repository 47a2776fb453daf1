-- What the replicator needs to notice changes made around the outbox.

-- The publication's identity when the slot was last known to carry every
-- outbox row (replicator.publicationIdentity): the publication's oid, the
-- outbox's membership in it and the outbox table's oid. pgoutput decodes
-- with the catalog as it was at each change, so a row committed while the
-- publication was dropped or the outbox was out of it is never streamed,
-- and a slot that decoded past a dropped publication cannot be resumed. A
-- session that finds another identity recreates the slot, whose catch-up
-- folds what it missed.
ALTER TABLE neon_auth.replicator_checkpoint ADD COLUMN publication_id text;

-- History and rejects are keyed by outbox id, so an id must never be used
-- twice: after TRUNCATE ... RESTART IDENTITY the identity would hand out
-- ids that history and rejects already hold, and the new rows would be
-- taken for replays. This moves it past every id already accounted for.
CREATE FUNCTION neon_auth.outbox_ids_stay_unique() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    seq text := pg_get_serial_sequence('neon_auth.outbox', 'id');
    used bigint;
    handed bigint;
    called boolean;
BEGIN
    SELECT GREATEST((SELECT max(outbox_id) FROM neon_auth.users_sync_history),
                    (SELECT max(outbox_id) FROM neon_auth.outbox_rejects)) INTO used;
    EXECUTE format('SELECT last_value, is_called FROM %s', seq) INTO handed, called;
    IF NOT called THEN
        handed := handed - 1;
    END IF;
    IF used > handed THEN
        PERFORM setval(seq, used, true);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_ids_stay_unique AFTER TRUNCATE ON neon_auth.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION neon_auth.outbox_ids_stay_unique();
