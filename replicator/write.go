package replicator

import (
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
)

// The writes of an apply transaction are set-based: one statement per table
// whatever the number of rows, each taking its rows as parallel arrays.
const (
	upsertUsersSQL = `INSERT INTO neon_auth.users_sync AS t (id, name, email, created_at, updated_at, deleted_at, raw_json)
		SELECT id, name, email, created_at, updated_at, deleted_at, raw_json::jsonb
		FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[], $7::text[])
			AS u(id, name, email, created_at, updated_at, deleted_at, raw_json)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
			created_at = excluded.created_at, updated_at = excluded.updated_at,
			deleted_at = excluded.deleted_at, raw_json = excluded.raw_json`
	upsertStatesSQL = `INSERT INTO neon_auth.users_sync_state AS t (user_id, profile_at, profile_outbox_id, last_at, last_outbox_id)
		SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int8[], $4::timestamptz[], $5::int8[])
		ON CONFLICT (user_id) DO UPDATE SET profile_at = excluded.profile_at,
			profile_outbox_id = excluded.profile_outbox_id, last_at = excluded.last_at,
			last_outbox_id = excluded.last_outbox_id`
	insertHistorySQL = `INSERT INTO neon_auth.users_sync_history
			(user_id, operation, outbox_id, provider, event_type, event_id, occurred_at, before, after, source_lsn, source_committed_at)
		SELECT user_id, operation, outbox_id, provider, event_type, event_id, occurred_at,
			before::jsonb, after::jsonb, source_lsn::pg_lsn, source_committed_at
		FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
			$8::text[], $9::text[], $10::text[], $11::timestamptz[])
			AS h(user_id, operation, outbox_id, provider, event_type, event_id, occurred_at, before, after, source_lsn, source_committed_at)`
	insertRejectsSQL = `INSERT INTO neon_auth.outbox_rejects (outbox_id, provider, event_type, payload, error, source_lsn)
		SELECT outbox_id, provider, event_type, payload::jsonb, error, source_lsn::pg_lsn
		FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
			AS r(outbox_id, provider, event_type, payload, error, source_lsn)`
)

// writeBatch accumulates the writes of one apply transaction.
type writeBatch struct {
	b       *pgx.Batch
	rejects struct {
		ids                             []int64
		providers, types, payloads, why []string
		lsns                            []*string
	}
}

func newWriteBatch() *writeBatch { return &writeBatch{b: &pgx.Batch{}} }

func (w *writeBatch) queueUsers(changed []string, states map[string]*outbox.State) {
	if len(changed) == 0 {
		return
	}
	n := len(changed)
	var (
		ids, raws               = make([]string, 0, n), make([]string, 0, n)
		names, emails           = make([]*string, 0, n), make([]*string, 0, n)
		created, updated, delAt = make([]*time.Time, 0, n), make([]*time.Time, 0, n), make([]*time.Time, 0, n)
		profileAt, lastAt       = make([]*time.Time, 0, n), make([]time.Time, 0, n)
		profileID, lastID       = make([]*int64, 0, n), make([]int64, 0, n)
	)
	for _, id := range changed {
		st := states[id]
		r := st.Row
		ids = append(ids, id)
		names, emails = append(names, r.Name), append(emails, r.Email)
		created, updated, delAt = append(created, r.CreatedAt), append(updated, r.UpdatedAt), append(delAt, r.DeletedAt)
		raws = append(raws, string(r.RawJSON))
		if st.Profile.IsZero() {
			profileAt, profileID = append(profileAt, nil), append(profileID, nil)
		} else {
			at, pid := st.Profile.At, st.Profile.OutboxID
			profileAt, profileID = append(profileAt, &at), append(profileID, &pid)
		}
		lastAt, lastID = append(lastAt, st.Last.At), append(lastID, st.Last.OutboxID)
	}
	w.b.Queue(upsertUsersSQL, ids, names, emails, created, updated, delAt, raws)
	w.b.Queue(upsertStatesSQL, ids, profileAt, profileID, lastAt, lastID)
}

func (w *writeBatch) queueHistory(history []historyEntry) {
	if len(history) == 0 {
		return
	}
	n := len(history)
	var (
		users, ops, providers, types = make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		outboxIDs                    = make([]int64, 0, n)
		eventIDs, befores, afters    = make([]*string, 0, n), make([]*string, 0, n), make([]*string, 0, n)
		lsns                         = make([]*string, 0, n)
		occurred                     = make([]time.Time, 0, n)
		committed                    = make([]*time.Time, 0, n)
	)
	for _, h := range history {
		users, ops = append(users, h.ev.UserID), append(ops, string(h.op))
		outboxIDs = append(outboxIDs, h.ev.OutboxID)
		providers, types = append(providers, h.ev.Provider), append(types, h.ev.Type)
		eventIDs = append(eventIDs, h.ev.EventID)
		occurred = append(occurred, h.ev.OccurredAt)
		befores, afters = append(befores, rowJSON(h.before)), append(afters, rowJSON(h.after))
		lsn, at := sourcePosition(h.src)
		lsns, committed = append(lsns, lsn), append(committed, at)
	}
	w.b.Queue(insertHistorySQL, users, ops, outboxIDs, providers, types, eventIDs, occurred, befores, afters, lsns, committed)
}

func (w *writeBatch) addReject(r pendingReject, payload string) {
	rj := &w.rejects
	rj.ids = append(rj.ids, r.src.ID)
	rj.providers = append(rj.providers, r.src.Provider)
	rj.types = append(rj.types, r.src.EventType)
	rj.payloads = append(rj.payloads, payload)
	rj.why = append(rj.why, r.reason)
	lsn, _ := sourcePosition(r.src)
	rj.lsns = append(rj.lsns, lsn)
}

func (w *writeBatch) queueRejects() {
	rj := &w.rejects
	if len(rj.ids) == 0 {
		return
	}
	w.b.Queue(insertRejectsSQL, rj.ids, rj.providers, rj.types, rj.payloads, rj.why, rj.lsns)
}

// sourcePosition returns the commit LSN and time of a streamed record, or
// nils for one folded by the catch-up.
func sourcePosition(src *sourceRecord) (*string, *time.Time) {
	if src.LSN == 0 {
		return nil, nil
	}
	lsn := pglogrepl.LSN(src.LSN).String()
	at := src.CommittedAt
	return &lsn, &at
}

func rowJSON(r *outbox.Row) *string {
	if r == nil {
		return nil
	}
	s := string(r.JSON())
	return &s
}
