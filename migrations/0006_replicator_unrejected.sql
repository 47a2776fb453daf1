-- A batch folded on the apply's cached user state (one round trip, no
-- load) calls this after the fence: it raises UF002 when one of the
-- batch's outbox rows already has a reject. Such a row can reach the
-- stream again (a reconnect re-streams what a catch-up rejected; another
-- slot's replicator rejected it), and folded it would get a history row
-- besides its reject. The apply then folds the batch again on loaded
-- state, whose load drops every change that has a reject.
CREATE FUNCTION neon_auth.replicator_unrejected(outbox_ids int8[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM neon_auth.outbox_rejects WHERE outbox_id = ANY(outbox_ids)) THEN
        RAISE EXCEPTION 'a change of the batch has a reject already' USING ERRCODE = 'UF002';
    END IF;
END
$$;
