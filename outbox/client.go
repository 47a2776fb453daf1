package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrInvalidEvent is wrapped by Insert's errors for an event the fold could
// never accept; retrying it cannot help.
var ErrInvalidEvent = errors.New("invalid outbox event")

// Querier runs one statement returning at most one row. pgx.Tx, *pgx.Conn and
// *pgxpool.Pool all have this method, so Insert can join the caller's own
// transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// NewEvent is an event to insert into neon_auth.outbox.
type NewEvent struct {
	// Provider names the payload's shape: ProviderClerk, ProviderStack,
	// ProviderWorkOS or ProviderGeneric.
	Provider string
	// Type is TypeCreated, TypeUpdated or TypeDeleted.
	Type string
	// Payload is the user object or the provider's whole webhook body; a JSON object.
	Payload json.RawMessage
	// EventID is the provider's delivery id; inserting the same (Provider,
	// EventID) twice stores it once. Empty means none (always inserted).
	EventID string
	// OccurredAt is when the provider says the event happened; zero means
	// unknown (the fold then uses the provider's own time or received_at).
	OccurredAt time.Time
}

// maxEventIDBytes bounds delivery ids (Svix's are 31 bytes): the unique
// index on (provider, event_id) cannot hold arbitrarily long keys.
const maxEventIDBytes = 512

// Validate reports, by field, what makes the event unusable whatever its
// payload says: an unknown provider or type, an event id the unique index
// cannot hold, a payload that is not a JSON object. What is inside the
// payload (a user id, the times) is the fold's to judge: an event it cannot
// fold becomes a row of neon_auth.outbox_rejects saying why, so that the
// delivery stays on record.
func (ev NewEvent) Validate() error {
	switch {
	case !knownProvider(ev.Provider):
		return fmt.Errorf("%w: Provider %q, want %s, %s, %s or %s", ErrInvalidEvent, ev.Provider, ProviderClerk, ProviderStack, ProviderWorkOS, ProviderGeneric)
	case len(ev.EventID) > maxEventIDBytes || !utf8.ValidString(ev.EventID):
		return fmt.Errorf("%w: EventID must be valid UTF-8 of at most %d bytes", ErrInvalidEvent, maxEventIDBytes)
	case ev.Type != TypeCreated && ev.Type != TypeUpdated && ev.Type != TypeDeleted:
		return fmt.Errorf("%w: Type %q, want %s, %s or %s", ErrInvalidEvent, ev.Type, TypeCreated, TypeUpdated, TypeDeleted)
	case !isJSONObject(ev.Payload):
		return fmt.Errorf("%w: Payload is not a JSON object", ErrInvalidEvent)
	}
	return nil
}

// knownProvider reports whether an adapter decodes the provider's payloads.
func knownProvider(p string) bool {
	_, ok := adapters[p]
	return ok
}

func isJSONObject(b []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil && m != nil
}

// The casts keep the statement valid under the simple protocol too (PgBouncer
// in transaction mode), where parameters carry no type of their own.
const insertSQL = `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at)
VALUES ($1, $2, $3::jsonb, $4::text, $5::timestamptz)
ON CONFLICT (provider, event_id) DO NOTHING
RETURNING id`

const existingSQL = `SELECT id FROM neon_auth.outbox WHERE provider = $1 AND event_id = $2`

// Insert adds ev to neon_auth.outbox through q, which is typically the
// caller's own transaction: the event then commits or rolls back together
// with the change that caused it (the transactional-outbox pattern), and the
// replicator folds it once committed.
//
// It returns the row's id and whether this call inserted it. When a row with
// the same provider and event id already exists, inserted is false and id is
// that row's.
func Insert(ctx context.Context, q Querier, ev NewEvent) (id int64, inserted bool, err error) {
	if err := ev.Validate(); err != nil {
		return 0, false, err
	}
	var eventID, occurredAt any // nil is SQL NULL
	if ev.EventID != "" {
		eventID = ev.EventID
	}
	if !ev.OccurredAt.IsZero() {
		occurredAt = ev.OccurredAt
	}
	err = q.QueryRow(ctx, insertSQL, ev.Provider, ev.Type, string(ev.Payload), eventID, occurredAt).Scan(&id)
	if err == nil {
		return id, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, false, fmt.Errorf("insert into neon_auth.outbox: %w", err)
	}
	// ON CONFLICT waited for the conflicting row's transaction to commit, so
	// a fresh statement sees it.
	if err := q.QueryRow(ctx, existingSQL, ev.Provider, ev.EventID).Scan(&id); err != nil {
		return 0, false, fmt.Errorf("read existing outbox row: %w", err)
	}
	return id, false, nil
}

// FoldResult is what the replicator did with one outbox row.
type FoldResult struct {
	// OutboxID is the row's id.
	OutboxID int64
	// Rejected is true when the row went to neon_auth.outbox_rejects.
	Rejected bool
	// Error is the reject's reason; empty when folded.
	Error string
	// Operation is the users_sync_history operation; empty when rejected.
	Operation Operation
	// UserID is the user the event was folded into; empty when rejected.
	UserID string
}

const foldResultSQL = `SELECT false, operation, user_id, '' FROM neon_auth.users_sync_history WHERE outbox_id = $1
UNION ALL
SELECT true, '', '', error FROM neon_auth.outbox_rejects WHERE outbox_id = $1
LIMIT 1`

// Poll delays of WaitFolded: short at first, since the replicator usually
// folds within milliseconds, then capped so a slow fold costs few queries.
const (
	waitFirstDelay = 5 * time.Millisecond
	waitMaxDelay   = 100 * time.Millisecond
)

// WaitFolded waits until the replicator has folded the outbox row outboxID
// into neon_auth.users_sync (or rejected it), so that an application that
// has just committed an event can read its own write. Give ctx a deadline:
// it returns ctx's error, wrapped, if the row is not folded in time.
//
// q must see other sessions' commits on each statement: pass a pool or a
// connection, not a REPEATABLE READ transaction, and call it after the
// transaction that inserted the row has committed.
func WaitFolded(ctx context.Context, q Querier, outboxID int64) (FoldResult, error) {
	delay := waitFirstDelay
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastErr error
	for {
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return FoldResult{}, fmt.Errorf("outbox row %d not folded yet (last error: %v): %w", outboxID, lastErr, ctx.Err())
			}
			return FoldResult{}, fmt.Errorf("outbox row %d not folded yet (is 'replicator run' running?): %w", outboxID, ctx.Err())
		case <-timer.C:
		}
		res, found, err := foldResult(ctx, q, outboxID)
		if err != nil && ctx.Err() == nil && !transient(err) {
			return FoldResult{}, err
		}
		// A dropped connection or a restarting compute may pass before the
		// deadline: keep polling, and say what went wrong if it does not.
		lastErr = err
		if found {
			return res, nil
		}
		timer.Reset(delay)
		delay = min(2*delay, waitMaxDelay)
	}
}

// transient reports whether a polling error may clear by itself: the
// server unreachable or the connection lost (a restarting compute), or an
// error the server raised for connection, resource, shutdown or
// serialization reasons. Anything else — a missing table, a permission, a
// transaction already committed or a closed pool passed as q — fails the
// same way every time.
func transient(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if len(pgErr.Code) < 2 {
			return false
		}
		switch pgErr.Code[:2] {
		case "08", "53", "57", "40": // connection, resources, shutdown/admin, serialization
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) || pgconn.Timeout(err) ||
		pgconn.SafeToRetry(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func foldResult(ctx context.Context, q Querier, outboxID int64) (FoldResult, bool, error) {
	res := FoldResult{OutboxID: outboxID}
	var op string
	err := q.QueryRow(ctx, foldResultSQL, outboxID).Scan(&res.Rejected, &op, &res.UserID, &res.Error)
	if errors.Is(err, pgx.ErrNoRows) {
		return res, false, nil
	}
	if err != nil {
		return res, false, fmt.Errorf("read fold result of outbox row %d: %w", outboxID, err)
	}
	res.Operation = Operation(op)
	return res, true, nil
}
