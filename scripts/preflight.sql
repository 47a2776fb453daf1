-- Checks that a database is ready for usersync's replicator.
-- Usage: psql "$DATABASE_URL" -f scripts/preflight.sql
-- Every row should say ok; otherwise its hint says what to do.
SELECT 'wal_level' AS check,
       current_setting('wal_level') AS value,
       CASE WHEN current_setting('wal_level') = 'logical' THEN 'ok'
            ELSE 'enable logical replication (Neon: project settings; elsewhere wal_level = logical and restart)' END AS hint
UNION ALL
SELECT 'role can replicate',
       rolname,
       CASE WHEN rolreplication OR rolsuper THEN 'ok'
            ELSE 'ALTER ROLE ' || quote_ident(rolname) || ' WITH REPLICATION (Neon: use a role created in the console)' END
FROM pg_roles WHERE rolname = current_user
UNION ALL
SELECT 'free replication slots',
       (current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots))::text,
       CASE WHEN current_setting('max_replication_slots')::int > (SELECT count(*) FROM pg_replication_slots) THEN 'ok'
            ELSE 'raise max_replication_slots or drop an unused slot' END
UNION ALL
SELECT 'schema neon_auth',
       CASE WHEN to_regclass('neon_auth.schema_migrations') IS NULL THEN 'missing' ELSE 'present' END,
       CASE WHEN to_regclass('neon_auth.schema_migrations') IS NULL THEN 'run: replicator migrate' ELSE 'ok' END;
