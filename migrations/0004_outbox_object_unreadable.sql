-- The apply reads each user object from its outbox row; it says, with this
-- function, when a row it was not given the text of cannot be read (a row
-- caught up under the slot's snapshot whose transaction is not yet visible
-- to other sessions), and then applies the batch again with the texts.
CREATE FUNCTION neon_auth.outbox_object_unreadable(outbox_id bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the user object of outbox row % cannot be read yet', outbox_id
        USING ERRCODE = 'UA001';
END
$$;
