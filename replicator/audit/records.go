package audit

import (
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
)

// outboxColumns selects an outbox row for scanRecord.
const outboxColumns = `o.id, o.provider, o.event_type, o.payload::text, o.event_id, o.occurred_at, o.received_at`

// scanRecord reads the outboxColumns of a row, followed by extra, into an
// outbox.Record with times in UTC, as the replicator decodes them.
func scanRecord(row pgx.Row, extra ...any) (outbox.Record, error) {
	var r outbox.Record
	var payload string
	dest := append([]any{&r.ID, &r.Provider, &r.EventType, &payload, &r.EventID, &r.OccurredAt, &r.ReceivedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return r, err
	}
	r.Payload = []byte(payload)
	if r.OccurredAt != nil {
		u := r.OccurredAt.UTC()
		r.OccurredAt = &u
	}
	r.ReceivedAt = r.ReceivedAt.UTC()
	return r, nil
}

// userState is one user's users_sync row and registers as stored.
type userState struct {
	row   *outbox.Row
	state outbox.State
	// hasRegisters is false when users_sync_state has no row for the user.
	hasRegisters bool
}

// stateColumns selects, for the user id q.id, the users_sync row and the
// registers; scanUserState reads them.
const stateColumns = `u.id IS NOT NULL, u.name, u.email, u.created_at, u.updated_at, u.deleted_at, u.raw_json::text,
	s.user_id IS NOT NULL, s.profile_at, s.profile_outbox_id, s.last_at, s.last_outbox_id`

func scanUserState(row pgx.Row, id *string) (userState, error) {
	var (
		us                userState
		hasRow            bool
		r                 outbox.Row
		raw               *string
		profileAt, lastAt *time.Time
		profileID, lastID *int64
	)
	if err := row.Scan(id, &hasRow, &r.Name, &r.Email, &r.CreatedAt, &r.UpdatedAt, &r.DeletedAt, &raw,
		&us.hasRegisters, &profileAt, &profileID, &lastAt, &lastID); err != nil {
		return us, err
	}
	if hasRow {
		r.ID = *id
		if raw != nil {
			r.RawJSON = []byte(*raw)
		}
		us.row = &r
	}
	us.state = outbox.State{Row: us.row, Profile: keyOf(profileAt, profileID), Last: keyOf(lastAt, lastID)}
	return us, nil
}

func keyOf(at *time.Time, id *int64) outbox.Key {
	if at == nil || id == nil {
		return outbox.Key{}
	}
	return outbox.Key{At: at.UTC(), OutboxID: *id}
}
