package replicator

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
)

// rowImage renders a users_sync row as the history's before/after image:
// the seven columns as keys, times in UTC RFC 3339 with microseconds (as
// outbox.Row.JSON writes them) and raw_json embedded. Built in the database
// from values it holds, the image costs no JSON parsing: each user object
// is parsed once, where it enters the batch.
func rowImage(id, name, email, createdAt, updatedAt, deletedAt, rawJSON string) string {
	return fmt.Sprintf(`jsonb_build_object('id', %s, 'name', %s, 'email', %s, 'created_at', %s,
			'updated_at', %s, 'deleted_at', %s, 'raw_json', %s)`,
		id, name, email, imageTime(createdAt), imageTime(updatedAt), imageTime(deletedAt), rawJSON)
}

func imageTime(col string) string {
	return fmt.Sprintf(`to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`, col)
}

// foldSQL writes a folded batch in one statement, from one row per change
// in fold order: its history row (the before image is the after image of
// the user's previous change, prev, or for the first one the row as it
// stood), and for each changed user, from its last change that changed
// something (final), its users_sync row and registers. The fold knows prev
// and final, so the database sorts nothing but the history's order.
//
// A user object is taken where it already is, as jsonb: in the outbox row
// of the event it came from (raw_src: its payload, or the payload's "data"
// when raw_enveloped), or in users_sync when no change of the batch brought
// a new one (raw_src null). Only when the outbox row cannot be read is the
// object's text (raw_ref) parsed: a row can arrive before its transaction is
// visible to other sessions (a streamed one, for a moment; one caught up
// under the slot's exported snapshot while its commit waits for a
// synchronous standby), or an application may have deleted it after
// inserting it. Streamed changes send their text along; caught-up ones,
// which are visible but for that rare case, do not, and a missing object
// raises UA001 (neon_auth.outbox_object_unreadable), upon which the batch is
// applied again with every text.
//
// A change already accounted for (a replay after a crash, or a row both
// caught up and streamed) folds as stale and its history row is skipped.
var foldSQL = `WITH e AS MATERIALIZED (
	SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
			$8::text[], $9::timestamptz[], $10::bool[], $11::text[], $12::text[], $13::timestamptz[],
			$14::timestamptz[], $15::timestamptz[], $16::int4[], $17::timestamptz[], $18::int8[], $19::timestamptz[], $20::int8[],
			$22::int4[], $23::bool[], $24::int8[], $25::bool[])
		WITH ORDINALITY AS e(outbox_id, user_id, operation, provider, event_type, event_id, occurred_at,
			source_lsn, source_committed_at, row_exists, name, email, created_at,
			updated_at, deleted_at, raw_ref, profile_at, profile_outbox_id, last_at, last_outbox_id,
			prev, final, raw_src, raw_enveloped, ord)
), r AS MATERIALIZED (
	SELECT e.*, cur.id IS NOT NULL AS had_row,
		cur.name AS cur_name, cur.email AS cur_email, cur.created_at AS cur_created_at,
		cur.updated_at AS cur_updated_at, cur.deleted_at AS cur_deleted_at, cur.raw_json AS cur_raw_json,
		CASE WHEN e.raw_src IS NULL THEN cur.raw_json
			ELSE COALESCE((SELECT CASE WHEN e.raw_enveloped THEN o.payload -> 'data' ELSE o.payload END
				FROM neon_auth.outbox o WHERE o.id = e.raw_src), ($21::text[])[e.raw_ref]::jsonb,
				neon_auth.outbox_object_unreadable(e.raw_src)) END AS raw_json
	FROM e
	LEFT JOIN neon_auth.users_sync cur ON cur.id = e.user_id
), v AS MATERIALIZED (
	SELECT r.*,
		CASE WHEN r.row_exists THEN ` + rowImage("r.user_id", "r.name", "r.email", "r.created_at", "r.updated_at", "r.deleted_at", "r.raw_json") + ` END AS after_image,
		CASE WHEN r.prev = 0 AND r.had_row THEN ` + rowImage("r.user_id", "r.cur_name", "r.cur_email", "r.cur_created_at", "r.cur_updated_at", "r.cur_deleted_at", "r.cur_raw_json") + ` END AS first_before
	FROM r
), history AS (
	INSERT INTO neon_auth.users_sync_history
		(user_id, operation, outbox_id, provider, event_type, event_id, occurred_at, before, after, source_lsn, source_committed_at)
	SELECT v.user_id, v.operation, v.outbox_id, v.provider, v.event_type, v.event_id, v.occurred_at,
		CASE WHEN v.prev = 0 THEN v.first_before ELSE p.after_image END,
		v.after_image, v.source_lsn::pg_lsn, v.source_committed_at
	FROM v LEFT JOIN v AS p ON p.ord = v.prev
	ORDER BY v.ord
	ON CONFLICT (outbox_id) DO NOTHING
	RETURNING operation, source_committed_at
), users AS (
	INSERT INTO neon_auth.users_sync AS t (id, name, email, created_at, updated_at, deleted_at, raw_json)
	SELECT user_id, name, email, created_at, updated_at, deleted_at, raw_json FROM v WHERE final
	ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
		created_at = excluded.created_at, updated_at = excluded.updated_at,
		deleted_at = excluded.deleted_at, raw_json = excluded.raw_json
), registers AS (
	INSERT INTO neon_auth.users_sync_state AS t (user_id, profile_at, profile_outbox_id, last_at, last_outbox_id)
	SELECT user_id, profile_at, profile_outbox_id, last_at, last_outbox_id FROM e WHERE final
	ON CONFLICT (user_id) DO UPDATE SET profile_at = excluded.profile_at,
		profile_outbox_id = excluded.profile_outbox_id, last_at = excluded.last_at,
		last_outbox_id = excluded.last_outbox_id
)
SELECT operation, source_committed_at FROM history`

const insertRejectsSQL = `INSERT INTO neon_auth.outbox_rejects (outbox_id, provider, event_type, payload, error, source_lsn)
	SELECT outbox_id, provider, event_type, payload::jsonb, error, source_lsn::pg_lsn
	FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
		AS r(outbox_id, provider, event_type, payload, error, source_lsn)
	ON CONFLICT (outbox_id) DO NOTHING`

// foldPlan is a folded batch as the parallel arrays foldSQL takes, one
// element per change, plus the rejects.
type foldPlan struct {
	outboxIDs                     []int64
	profileIDs, lastIDs           []*int64
	users, ops, providers, types  []string
	eventIDs, lsns, names, emails []*string
	occurred, committed           []*time.Time
	created, updated, deleted     []*time.Time
	profileAt, lastAt             []*time.Time
	exists, final                 []bool
	rawRefs                       []*int32
	rawSrcs                       []*int64
	rawEnveloped                  []bool
	prev                          []int32 // 1-based position of the user's previous change, 0 for its first
	raws                          []string
	rawIndex                      map[int64]int32   // outbox id → 1-based position in raws
	byOutboxID                    map[int64]*change // the batch's changes planned so far
	last                          map[string]int    // user → 0-based position of its last change so far
	lastChange                    map[string]int    // user → 0-based position of its last change that changed something
	rejects                       rejectRows
	redact                        []redaction // outbox rows of forgotten users (forgotten.go)
	replays                       int         // changes dropped as already applied
	withTexts                     bool        // send the objects of caught-up changes too
	// states is every folded user's state after the batch (for folding
	// the next batch ahead, and the cache), forgotten the users erased.
	states    map[string]*outbox.State
	forgotten map[string]bool
}

type rejectRows struct {
	ids                             []int64
	providers, types, payloads, why []string
	lsns                            []*string
}

// foldBatch folds b's changes in order into ld.states (which it updates)
// and plans the writes; forcedReject turns every change into a reject. A change
// already applied is dropped. A change of a forgotten user is recorded as
// such, never folded, and its payload is queued for redaction.
func foldBatch(b *batch, ld *loaded, forcedReject *string, withTexts bool) *foldPlan {
	states, forgotten, applied := ld.states, ld.forgotten, ld.applied
	p := &foldPlan{rawIndex: make(map[int64]int32), byOutboxID: make(map[int64]*change),
		last: make(map[string]int), lastChange: make(map[string]int), withTexts: withTexts, states: states,
		forgotten: forgotten}
	for i := range b.changes {
		c := &b.changes[i]
		switch {
		case applied[c.src.ID]:
			p.replays++
			continue
		case forcedReject != nil:
			p.rejects.add(&c.src, p.rejectPayload(&c.src, forgotten), *forcedReject)
			continue
		case c.reject != "":
			p.rejects.add(&c.src, p.rejectPayload(&c.src, forgotten), c.reject)
			continue
		case forgotten[c.ev.UserID]:
			p.add(c, outbox.OpForgotten, &outbox.State{})
			p.redact = append(p.redact, redaction{outboxID: c.ev.OutboxID, userID: c.ev.UserID})
			continue
		}
		ev := &c.ev
		st := states[ev.UserID]
		if st == nil {
			st = &outbox.State{}
		}
		next, op := outbox.Fold(*st, *ev)
		p.add(c, op, &next)
		states[ev.UserID] = &next
	}
	for _, i := range p.lastChange {
		p.final[i] = true
	}
	return p
}

// add plans the history row of one change and the state it leaves.
func (p *foldPlan) add(c *change, op outbox.Operation, st *outbox.State) {
	ev := &c.ev
	id := ev.OutboxID
	p.outboxIDs = append(p.outboxIDs, id)
	p.users, p.ops = append(p.users, ev.UserID), append(p.ops, string(op))
	p.providers, p.types = append(p.providers, ev.Provider), append(p.types, ev.Type)
	p.eventIDs = append(p.eventIDs, ev.EventID)
	at := ev.OccurredAt
	p.occurred = append(p.occurred, &at)
	lsn, committed := sourcePosition(&c.src)
	p.lsns, p.committed = append(p.lsns, lsn), append(p.committed, committed)

	r := st.Row
	p.exists = append(p.exists, r != nil)
	if r == nil {
		r = &outbox.Row{}
	}
	p.names, p.emails = append(p.names, r.Name), append(p.emails, r.Email)
	p.created, p.updated, p.deleted = append(p.created, r.CreatedAt), append(p.updated, r.UpdatedAt), append(p.deleted, r.DeletedAt)
	p.byOutboxID[id] = c
	p.addRawSource(st)
	pos := len(p.users) - 1
	if prev, ok := p.last[ev.UserID]; ok {
		p.prev = append(p.prev, int32(prev+1))
	} else {
		p.prev = append(p.prev, 0)
	}
	p.last[ev.UserID] = pos
	p.final = append(p.final, false)
	if op != outbox.OpStale && op != outbox.OpForgotten {
		p.lastChange[ev.UserID] = pos
	}

	if st.Profile.IsZero() {
		p.profileAt, p.profileIDs = append(p.profileAt, nil), append(p.profileIDs, nil)
	} else {
		pat, pid := st.Profile.At, st.Profile.OutboxID
		p.profileAt, p.profileIDs = append(p.profileAt, &pat), append(p.profileIDs, &pid)
	}
	lat, lid := st.Last.At, st.Last.OutboxID
	p.lastAt, p.lastIDs = append(p.lastAt, &lat), append(p.lastIDs, &lid)
}

// addRawSource says where the row's raw_json is after a change: in the
// outbox row of the batch's change it came from, or (nil) in users_sync.
// The object's text goes along, once, for when that row cannot be read: for
// a streamed change always, for a caught-up one when withTexts.
func (p *foldPlan) addRawSource(st *outbox.State) {
	src := p.byOutboxID[st.RawFrom]
	if st.RawFrom == 0 || src == nil {
		p.rawSrcs, p.rawEnveloped, p.rawRefs = append(p.rawSrcs, nil), append(p.rawEnveloped, false), append(p.rawRefs, nil)
		return
	}
	id := st.RawFrom
	p.rawSrcs, p.rawEnveloped = append(p.rawSrcs, &id), append(p.rawEnveloped, src.ev.Enveloped)
	if src.src.LSN == 0 && !p.withTexts {
		p.rawRefs = append(p.rawRefs, nil)
		return
	}
	ref, ok := p.rawIndex[id]
	if !ok {
		p.raws = append(p.raws, string(src.ev.Object))
		ref = int32(len(p.raws))
		p.rawIndex[id] = ref
	}
	p.rawRefs = append(p.rawRefs, &ref)
}

func (r *rejectRows) add(src *sourceRecord, payload, reason string) {
	r.ids = append(r.ids, src.ID)
	r.providers = append(r.providers, src.Provider)
	r.types = append(r.types, src.EventType)
	r.payloads = append(r.payloads, payload)
	r.why = append(r.why, reason)
	lsn, _ := sourcePosition(src)
	r.lsns = append(r.lsns, lsn)
}

// queue adds the plan's statements to q.
func (p *foldPlan) queue(q *pgx.Batch) {
	if len(p.users) > 0 {
		q.Queue(foldSQL, p.outboxIDs, p.users, p.ops, p.providers, p.types, p.eventIDs, p.occurred,
			p.lsns, p.committed, p.exists, p.names, p.emails, p.created,
			p.updated, p.deleted, p.rawRefs, p.profileAt, p.profileIDs, p.lastAt, p.lastIDs, p.raws, p.prev, p.final,
			p.rawSrcs, p.rawEnveloped)
	}
	if rj := &p.rejects; len(rj.ids) > 0 {
		q.Queue(insertRejectsSQL, rj.ids, rj.providers, rj.types, rj.payloads, rj.why, rj.lsns)
	}
}

// read reads the results of the plan's statements.
func (p *foldPlan) read(br pgx.BatchResults) (applyStats, error) {
	stats := applyStats{Skipped: p.replays}
	if len(p.users) > 0 {
		rows, _ := br.Query()
		var op string
		var committed *time.Time
		stats.ops = make(map[outbox.Operation]int)
		_, err := pgx.ForEachRow(rows, []any{&op, &committed}, func() error {
			stats.Folded++
			stats.ops[outbox.Operation(op)]++
			if committed != nil {
				stats.commits = append(stats.commits, *committed)
			}
			return nil
		})
		if err != nil {
			return stats, fmt.Errorf("write folded batch: %w", err)
		}
		stats.Skipped += len(p.users) - stats.Folded
	}
	if rj := &p.rejects; len(rj.ids) > 0 {
		tag, err := br.Exec()
		if err != nil {
			return stats, fmt.Errorf("write rejects: %w", err)
		}
		stats.Rejected = int(tag.RowsAffected())
		stats.Skipped += len(rj.ids) - stats.Rejected
	}
	return stats, nil
}

// sourcePosition returns the commit LSN and time of a streamed record, or
// nils for one folded by the catch-up.
func sourcePosition(src *sourceRecord) (*string, *time.Time) {
	if src.LSN == 0 {
		return nil, nil
	}
	lsn := lsnText(src.LSN)
	at := src.CommittedAt
	return &lsn, &at
}
