-- The apply's fence, as one function. Every apply transaction calls it
-- first (after the fold lock): it moves the slot's checkpoint to lsn when
-- generation is still the slot's (else raises UF001: another instance took
-- the slot over), and returns a fingerprint of the writes to fold state by
-- others than this apply — the external_epoch that resync and forget bump,
-- and the row versions of the other slots' checkpoints, which their
-- appliers rewrite in every transaction. The apply keeps users' fold state
-- between transactions while the fingerprint stays the same: given the
-- fingerprint it expects, the function raises UF002 when it changed, before
-- anything is written on state that is no longer true.
CREATE FUNCTION neon_auth.replicator_fence(slot text, generation bigint, lsn pg_lsn, expected text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    fingerprint text;
BEGIN
    UPDATE neon_auth.replicator_checkpoint AS c
        SET lsn = GREATEST(c.lsn, replicator_fence.lsn), updated_at = now()
        WHERE c.slot_name = replicator_fence.slot AND c.generation = replicator_fence.generation
        RETURNING c.external_epoch::text || '/' || COALESCE((
            SELECT string_agg(o.slot_name || ':' || o.xmin::text, ',' ORDER BY o.slot_name)
            FROM neon_auth.replicator_checkpoint o WHERE o.slot_name <> replicator_fence.slot), '')
        INTO fingerprint;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'another replicator instance took over slot %', slot USING ERRCODE = 'UF001';
    END IF;
    IF expected IS NOT NULL AND expected <> fingerprint THEN
        RAISE EXCEPTION 'fold state was written by another writer since it was loaded' USING ERRCODE = 'UF002';
    END IF;
    RETURN fingerprint;
END
$$;
