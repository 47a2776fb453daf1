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
-- ids that history and rejects already hold, or that rows committed before
-- the TRUNCATE and still on their way through the WAL hold, and the new rows
-- would be taken for replays. Before the TRUNCATE, the ids handed out so far
-- are noted (in a setting of the transaction); after it, the identity is
-- moved past them and past every id history and rejects hold.
CREATE FUNCTION neon_auth.outbox_ids_note_used() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    handed bigint;
    called boolean;
BEGIN
    EXECUTE format('SELECT last_value, is_called FROM %s', pg_get_serial_sequence('neon_auth.outbox', 'id'))
        INTO handed, called;
    IF NOT called THEN
        handed := handed - 1;
    END IF;
    PERFORM set_config('usersync.outbox_ids_used', handed::text, true);
    RETURN NULL;
END
$$;

CREATE FUNCTION neon_auth.outbox_ids_stay_unique() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    seq text := pg_get_serial_sequence('neon_auth.outbox', 'id');
    used bigint;
    handed bigint;
    called boolean;
BEGIN
    SELECT GREATEST((SELECT max(outbox_id) FROM neon_auth.users_sync_history),
                    (SELECT max(outbox_id) FROM neon_auth.outbox_rejects),
                    NULLIF(current_setting('usersync.outbox_ids_used', true), '')::bigint) INTO used;
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

CREATE TRIGGER outbox_ids_note_used BEFORE TRUNCATE ON neon_auth.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION neon_auth.outbox_ids_note_used();
CREATE TRIGGER outbox_ids_stay_unique AFTER TRUNCATE ON neon_auth.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION neon_auth.outbox_ids_stay_unique();
