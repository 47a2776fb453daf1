-- Storage for the apply's write path. Nothing here changes a column or
-- what a query returns.

-- History images are most of what an apply writes, and each is large enough
-- to be compressed when stored. lz4 compresses them at a fraction of the CPU
-- cost of the default pglz, to a similar size; a server built without lz4
-- keeps pglz.
DO $$
BEGIN
    ALTER TABLE neon_auth.users_sync_history
        ALTER COLUMN before SET COMPRESSION lz4,
        ALTER COLUMN after SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4: history images stay compressed with pglz';
END $$;

-- Every event rewrites its user's row and registers. Room left in each page
-- lets the new version go next to the old one (a HOT update), so that the
-- indexes are not touched when no indexed column changes.
ALTER TABLE neon_auth.users_sync SET (fillfactor = 80);
ALTER TABLE neon_auth.users_sync_state SET (fillfactor = 80);
