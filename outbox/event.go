package outbox

import (
	"encoding/json"
	"time"
)

// Event types accepted in neon_auth.outbox.event_type.
const (
	TypeCreated = "user.created"
	TypeUpdated = "user.updated"
	TypeDeleted = "user.deleted"
)

// Providers whose payloads the adapters understand.
const (
	ProviderClerk   = "clerk"
	ProviderStack   = "stack"
	ProviderWorkOS  = "workos"
	ProviderGeneric = "generic"
)

// Record is one row of neon_auth.outbox, as read from the table or the WAL.
type Record struct {
	// ID is the outbox row's identity.
	ID int64
	// Provider names the adapter: clerk, stack, workos or generic.
	Provider string
	// EventType is user.created, user.updated or user.deleted.
	EventType string
	// Payload is the jsonb text: a bare user object or a whole webhook body.
	Payload []byte
	// EventID is the provider's delivery id; nil when absent.
	EventID *string
	// OccurredAt is the inserter's event time; nil when absent.
	OccurredAt *time.Time
	// ReceivedAt is when the row was inserted; the last fallback for the event time.
	ReceivedAt time.Time
}

// Key orders a user's events: by occurred_at, then by outbox id.
type Key struct {
	// At is the event's effective occurred_at.
	At time.Time
	// OutboxID breaks ties between events that occurred at the same time.
	OutboxID int64
}

// IsZero reports whether k is the key of no event.
func (k Key) IsZero() bool { return k.OutboxID == 0 && k.At.IsZero() }

// Less reports whether k sorts before o.
func (k Key) Less(o Key) bool {
	if c := k.At.Compare(o.At); c != 0 {
		return c < 0
	}
	return k.OutboxID < o.OutboxID
}

// Profile is what a user.created or user.updated event says about the user.
// Name, Email and CreatedAt are nil when the payload has no value for them;
// Decode sets UpdatedAt to the event's occurred_at when the payload has none.
type Profile struct {
	Name      *string
	Email     *string
	CreatedAt *time.Time
	UpdatedAt *time.Time
}

// Event is a validated outbox record, ready to fold.
type Event struct {
	// OutboxID is the outbox row's id: the event's identity and tiebreak.
	OutboxID int64
	// Provider is the adapter that decoded the payload.
	Provider string
	// Type is user.created, user.updated or user.deleted.
	Type string
	// EventID is the provider's delivery id; nil when absent.
	EventID *string
	// UserID is the provider's user id, users_sync.id.
	UserID string
	// OccurredAt is the effective event time (outbox column, else the
	// provider's own time, else received_at), truncated to microseconds.
	OccurredAt time.Time
	// Profile is set for user.created and user.updated.
	Profile Profile
	// Object is the user object after unwrapping any envelope; it becomes
	// raw_json. It shares memory with the record's Payload.
	Object json.RawMessage
	// Enveloped reports that Object is the "data" member of the payload (a
	// webhook body) rather than the whole payload.
	Enveloped bool
}

// Key returns the event's fold key.
func (e *Event) Key() Key { return Key{At: e.OccurredAt, OutboxID: e.OutboxID} }

// Row is a row of neon_auth.users_sync.
type Row struct {
	ID        string          `json:"id"`
	Name      *string         `json:"name"`
	Email     *string         `json:"email"`
	CreatedAt *time.Time      `json:"created_at"`
	UpdatedAt *time.Time      `json:"updated_at"`
	DeletedAt *time.Time      `json:"deleted_at"`
	RawJSON   json.RawMessage `json:"raw_json"`
}

// State is one user's users_sync row together with its fold registers.
type State struct {
	// Row is the users_sync row; nil when the user has none.
	Row *Row
	// Profile is the key of the event whose content Row shows; zero when no
	// user.created/user.updated has been folded (a tombstone).
	Profile Key
	// Last is the greatest key of any folded event; zero when none.
	Last Key
	// RawFrom is the outbox id of the event whose user object is
	// Row.RawJSON; zero when the row's content came from elsewhere (an
	// earlier apply, loaded from the database). The replicator uses it to
	// send each object to the database once and reference it from there.
	RawFrom int64
}

// Operation is what folding one event did, as recorded in users_sync_history.
type Operation string

// Operations recorded in users_sync_history.operation.
const (
	OpInsert Operation = "insert"
	OpUpdate Operation = "update"
	OpDelete Operation = "delete"
	OpStale  Operation = "stale"
	// OpResync is a repair by `replicator resync`; it folds no event.
	OpResync Operation = "resync"
	// OpForgotten is an event for a user erased by `replicator forget`,
	// recorded without the user's data and not folded.
	OpForgotten Operation = "forgotten"
)
