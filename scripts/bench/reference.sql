-- The backfill reference: the fold of the whole outbox as one set-based
-- transaction, producing what `replicator run` produces from the same rows
-- (users_sync, users_sync_history with operations and before/after images,
-- and the registers in users_sync_state), for the Clerk provider and the
-- created/updated/deleted event types. It validates nothing: the workload
-- has no malformed rows. bench runs it inside one transaction and compares
-- its results with the replicator's.
--
-- The fold (SPEC.md "The fold"), as the replicator's catch-up applies it
-- (each user's events in outbox id order): an event's key is (at, id); a
-- profile event (created/updated) wins the profile register when its key is
-- above every earlier profile event's, any event wins the last register when
-- above every earlier event's. Since an earlier event has a smaller id, "key
-- above" is "at >= the running max of at". The row after an event is a
-- function of the two registers' winners: the profile columns and raw_json
-- of the profile winner, deleted_at the time of the last winner if it is a
-- delete; with no profile winner, a tombstone with the delete's object.

-- Tuned as a reference should be: sorts, hashes and temporary tables in
-- memory, and no JIT, whose compile time (about a second) costs more than it
-- saves here. bench runs this on a connection that has used no temporary
-- table yet, as temp_buffers can only be set before the first.
SET LOCAL work_mem = '256MB';
SET LOCAL temp_buffers = '1GB';
SET LOCAL jit = off;

-- Each event decoded: the Clerk mapping.
CREATE TEMP TABLE ref_event ON COMMIT DROP AS
WITH src AS (
    SELECT o.id, o.provider, o.event_type, o.event_id, o.occurred_at, o.received_at, o.payload,
           -- an envelope: an object "data", and no "id" of its own or a "type" naming a user event
           jsonb_typeof(o.payload -> 'data') = 'object'
               AND (NOT o.payload ? 'id'
                    OR (jsonb_typeof(o.payload -> 'type') = 'string' AND starts_with(o.payload ->> 'type', 'user.')))
               AS enveloped
    FROM neon_auth.outbox o
), unwrapped AS MATERIALIZED ( -- extract each payload's user object once
    SELECT s.*, CASE WHEN s.enveloped THEN s.payload -> 'data' ELSE s.payload END AS obj
    FROM src s
), timed AS (
    SELECT u.*,
           COALESCE(u.occurred_at,
                    CASE WHEN u.enveloped THEN 'epoch'::timestamptz + (u.payload ->> 'timestamp')::float8 * interval '1 millisecond' END,
                    'epoch'::timestamptz + (u.obj ->> 'updated_at')::float8 * interval '1 millisecond',
                    u.received_at) AS at
    FROM unwrapped u
)
SELECT t.id, t.provider, t.event_type, t.event_id, t.obj ->> 'id' AS user_id, t.obj, t.at,
       t.event_type = 'user.deleted' AS is_delete,
       CASE WHEN t.event_type <> 'user.deleted' THEN
           COALESCE(NULLIF(concat_ws(' ', NULLIF(btrim(t.obj ->> 'first_name', E' \t\n\r\f\x0B'), ''),
                                          NULLIF(btrim(t.obj ->> 'last_name', E' \t\n\r\f\x0B'), '')), ''),
                    NULLIF(t.obj ->> 'username', ''))
       END AS name,
       CASE WHEN t.event_type <> 'user.deleted' AND jsonb_typeof(t.obj -> 'email_addresses') = 'array' THEN
           (SELECT a.value ->> 'email_address'
            FROM jsonb_array_elements(t.obj -> 'email_addresses') WITH ORDINALITY AS a(value, n)
            ORDER BY COALESCE(a.value ->> 'id' = t.obj ->> 'primary_email_address_id', false) DESC, a.n
            LIMIT 1)
       END AS email,
       CASE WHEN t.event_type <> 'user.deleted' THEN
           'epoch'::timestamptz + (t.obj ->> 'created_at')::float8 * interval '1 millisecond'
       END AS created_at,
       CASE WHEN t.event_type <> 'user.deleted' THEN
           COALESCE('epoch'::timestamptz + (t.obj ->> 'updated_at')::float8 * interval '1 millisecond', t.at)
       END AS updated_at
FROM timed t;

CREATE UNIQUE INDEX ON ref_event (id);
ANALYZE ref_event;

-- The registers after each event (the ids of the profile and last winners)
-- and before it (those of the user's previous event).
CREATE TEMP TABLE ref_fold ON COMMIT DROP AS
WITH earlier AS (
    SELECT id, user_id, at, is_delete,
           max(at) FILTER (WHERE NOT is_delete) OVER before_me AS profile_max,
           max(at) OVER before_me AS last_max
    FROM ref_event
    WINDOW before_me AS (PARTITION BY user_id ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
), won AS (
    SELECT e.*,
           NOT e.is_delete AND (e.profile_max IS NULL OR e.at >= e.profile_max) AS won_profile,
           e.last_max IS NULL OR e.at >= e.last_max AS won_last
    FROM earlier e
), registers AS (
    SELECT id, user_id,
           CASE WHEN NOT won_profile AND NOT won_last THEN 'stale'
                WHEN is_delete THEN 'delete'
                WHEN last_max IS NULL THEN 'insert' -- the user's first event: no row before it
                ELSE 'update' END AS operation,
           max(id) FILTER (WHERE won_profile) OVER upto AS profile_id,
           max(id) FILTER (WHERE won_last) OVER upto AS last_id,
           lead(id) OVER upto IS NULL AS is_final
    FROM won
    WINDOW upto AS (PARTITION BY user_id ORDER BY id ROWS UNBOUNDED PRECEDING)
)
SELECT r.*,
       lag(r.profile_id) OVER by_user AS before_profile_id,
       lag(r.last_id) OVER by_user AS before_last_id
FROM registers r
WINDOW by_user AS (PARTITION BY r.user_id ORDER BY r.id);
ANALYZE ref_fold;

-- One history row per event. Its images are built from the winners'
-- decoded columns, so that no image is carried through a sort; a
-- tombstone's raw_json is the last winner's (a delete's) object.
INSERT INTO neon_auth.users_sync_history
    (user_id, operation, outbox_id, provider, event_type, event_id, occurred_at, before, after)
SELECT f.user_id, f.operation, f.id, e.provider, e.event_type, e.event_id, e.at,
       CASE WHEN f.before_last_id IS NOT NULL THEN
           jsonb_build_object('id', f.user_id, 'name', bp.name, 'email', bp.email,
                              'created_at', bp.created_at, 'updated_at', bp.updated_at,
                              'deleted_at', CASE WHEN bl.is_delete THEN bl.at END,
                              'raw_json', COALESCE(bp.obj, (SELECT t.obj FROM ref_event t WHERE t.id = f.before_last_id)))
       END,
       jsonb_build_object('id', f.user_id, 'name', p.name, 'email', p.email,
                          'created_at', p.created_at, 'updated_at', p.updated_at,
                          'deleted_at', CASE WHEN l.is_delete THEN l.at END,
                          'raw_json', COALESCE(p.obj, (SELECT t.obj FROM ref_event t WHERE t.id = f.last_id)))
FROM ref_fold f
JOIN ref_event e ON e.id = f.id
LEFT JOIN ref_event p ON p.id = f.profile_id
JOIN ref_event l ON l.id = f.last_id
LEFT JOIN ref_event bp ON bp.id = f.before_profile_id
LEFT JOIN ref_event bl ON bl.id = f.before_last_id;

-- users_sync and the registers: each user's state after its final event.
INSERT INTO neon_auth.users_sync (id, name, email, created_at, updated_at, deleted_at, raw_json)
SELECT f.user_id, p.name, p.email, p.created_at, p.updated_at,
       CASE WHEN l.is_delete THEN l.at END, COALESCE(p.obj, l.obj)
FROM ref_fold f
LEFT JOIN ref_event p ON p.id = f.profile_id
JOIN ref_event l ON l.id = f.last_id
WHERE f.is_final;

INSERT INTO neon_auth.users_sync_state (user_id, profile_at, profile_outbox_id, last_at, last_outbox_id)
SELECT f.user_id, p.at, f.profile_id, l.at, f.last_id
FROM ref_fold f
LEFT JOIN ref_event p ON p.id = f.profile_id
JOIN ref_event l ON l.id = f.last_id
WHERE f.is_final;
