package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
	"github.com/usersync/usersync/replicator"
)

// HistoryEntry is one row of a user's audit trail.
type HistoryEntry struct {
	AppliedAt  time.Time `json:"applied_at"`
	Operation  string    `json:"operation"`
	Provider   *string   `json:"provider"`
	EventType  *string   `json:"event_type"`
	EventID    *string   `json:"event_id"`
	OutboxID   *int64    `json:"outbox_id"`
	OccurredAt time.Time `json:"occurred_at"`
	SourceLSN  *string   `json:"source_lsn"`
	// Changes are the users_sync columns the event changed, in column order.
	Changes Changes `json:"changes"`
	// HadRow and HasRow say whether the user had a users_sync row before
	// and after; both are false for a forgotten user, whose images are erased.
	HadRow bool `json:"-"`
	HasRow bool `json:"-"`
}

// Change is one column's value before and after an event; nil is null.
type Change struct {
	Column        string
	Before, After json.RawMessage
}

// Changes marshals as {"column": [before, after], ...} in column order.
type Changes []Change

// MarshalJSON writes the changes as an object of [before, after] pairs.
func (cs Changes) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, c := range cs {
		if i > 0 {
			buf.WriteByte(',')
		}
		name, _ := json.Marshal(c.Column)
		fmt.Fprintf(&buf, "%s:[%s,%s]", name, orNull(c.Before), orNull(c.After))
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// rowColumns are the users_sync columns a change can touch, in table order.
var rowColumns = []string{"name", "email", "created_at", "updated_at", "deleted_at", "raw_json"}

// History returns userID's audit trail in the order it was applied: the
// last limit rows when limit > 0, else all. An unknown user has none.
func History(ctx context.Context, conn *pgx.Conn, userID string, limit int) ([]HistoryEntry, error) {
	if err := replicator.CheckSchema(ctx, conn); err != nil {
		return nil, err
	}
	var lim *int
	if limit > 0 {
		lim = &limit
	}
	rows, err := conn.Query(ctx, `SELECT * FROM (
			SELECT id, applied_at, operation, provider, event_type, event_id, outbox_id, occurred_at,
				source_lsn::text, before::text, after::text
			FROM neon_auth.users_sync_history WHERE user_id = $1 ORDER BY id DESC LIMIT $2) AS t
		ORDER BY id`, userID, lim)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	defer rows.Close()
	var out []HistoryEntry
	for rows.Next() {
		var (
			e             HistoryEntry
			id            int64
			before, after *string
		)
		if err := rows.Scan(&id, &e.AppliedAt, &e.Operation, &e.Provider, &e.EventType, &e.EventID, &e.OutboxID,
			&e.OccurredAt, &e.SourceLSN, &before, &after); err != nil {
			return nil, fmt.Errorf("read history: %w", err)
		}
		e.AppliedAt, e.OccurredAt = e.AppliedAt.UTC(), e.OccurredAt.UTC()
		e.HadRow, e.HasRow = before != nil, after != nil
		if e.Changes, err = changes(before, after); err != nil {
			return nil, fmt.Errorf("history row %d: %w", id, err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// changes compares two row images of users_sync_history, column by column,
// by JSON value. A missing image (no row) has every column null.
func changes(before, after *string) (Changes, error) {
	b, err := image(before)
	if err != nil {
		return nil, err
	}
	a, err := image(after)
	if err != nil {
		return nil, err
	}
	out := Changes{}
	for _, col := range rowColumns {
		if !outbox.SameJSON(b[col], a[col]) {
			out = append(out, Change{Column: col, Before: jsonOrNil(b[col]), After: jsonOrNil(a[col])})
		}
	}
	return out, nil
}

func image(s *string) (map[string]json.RawMessage, error) {
	if s == nil {
		return map[string]json.RawMessage{}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(*s), &m); err != nil {
		return nil, fmt.Errorf("row image is not a JSON object: %w", err)
	}
	return m, nil
}

func jsonOrNil(b json.RawMessage) json.RawMessage {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return b
}
