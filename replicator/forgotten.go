package replicator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Erased users (`replicator forget`) stay erased: an event for one of them
// that arrives later, a retried webhook say, is recorded in history as
// 'forgotten' without before/after images, is not folded, and its outbox
// payload (and reject payload, for a malformed one) is replaced by
// {"id": USER_ID, "forgotten": true} in the same apply transaction.

// forgottenSQL reads which of the batch's users have been forgotten. It runs
// after the fold lock, which forget also takes, so it sees every erasure
// committed before the apply.
const forgottenSQL = `SELECT user_id FROM neon_auth.forgotten_users WHERE user_id = ANY($1::text[])`

// redactSQL replaces the payloads of forgotten users' outbox rows.
const redactSQL = `UPDATE neon_auth.outbox AS o SET payload = jsonb_build_object('id', f.user_id, 'forgotten', true)
	FROM unnest($1::int8[], $2::text[]) AS f(id, user_id) WHERE o.id = f.id`

// redaction is an outbox row to redact, for the user it names.
type redaction struct {
	outboxID int64
	userID   string
}

// forgottenCandidates lists the users whose erasure matters to b: those
// of its changes, and those that its rejects' payloads name.
func (b *batch) forgottenCandidates() []string {
	ids := b.userIDs()
	for i := range b.changes {
		if c := &b.changes[i]; c.reject != "" {
			ids = append(ids, namedUsers(c.src.Payload)...)
		}
	}
	return ids
}

// readForgotten reads the result of forgottenSQL.
func readForgotten(br pgx.BatchResults) (map[string]bool, error) {
	rows, _ := br.Query()
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("load forgotten users: %w", err)
	}
	forgotten := make(map[string]bool, len(ids))
	for _, id := range ids {
		forgotten[id] = true
	}
	return forgotten, nil
}

// rejectPayload returns the payload to store for a rejected record: its
// own, or the redacted one when it names a forgotten user (then also queued
// for redaction in the outbox).
func (p *foldPlan) rejectPayload(src *sourceRecord, forgotten map[string]bool) string {
	for _, id := range namedUsers(src.Payload) {
		if forgotten[id] {
			p.redact = append(p.redact, redaction{outboxID: src.ID, userID: id})
			b, _ := json.Marshal(map[string]any{"id": id, "forgotten": true})
			return string(b)
		}
	}
	return string(src.Payload)
}

// redactWait bounds how long the apply waits for a streamed outbox row to
// become visible before it gives up redacting it (the row was deleted).
const redactWait = 10 * time.Second

// redact replaces the payloads of rs inside the apply transaction. A
// streamed row can reach the apply before its inserting transaction is
// visible to other sessions — the walsender sends a transaction once its
// commit record is flushed, the inserter leaves the proc array a moment
// later — and an UPDATE does not see it. So it retries, each statement with
// a fresh snapshot (read committed), the rows not yet redacted.
func (a *applier) redact(ctx context.Context, rs []redaction) error {
	left := make(map[int64]string, len(rs))
	for _, r := range rs {
		left[r.outboxID] = r.userID
	}
	deadline := time.Now().Add(redactWait)
	for len(left) > 0 && time.Now().Before(deadline) {
		ids, users := make([]int64, 0, len(left)), make([]string, 0, len(left))
		for id, user := range left {
			ids, users = append(ids, id), append(users, user)
		}
		rows, _ := a.conn.Query(ctx, redactSQL+" RETURNING o.id", ids, users)
		done, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return fmt.Errorf("redact forgotten users' payloads: %w", err)
		}
		for _, id := range done {
			delete(left, id)
		}
		if len(left) > 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// namedUsers returns the user ids a payload names, as forget finds them:
// a string "id" at the top level or in an object "data". A payload that is
// not a JSON object names none.
func namedUsers(payload []byte) []string {
	var top struct {
		ID   any `json:"id"`
		Data *struct {
			ID any `json:"id"`
		} `json:"data"`
	}
	if json.Unmarshal(payload, &top) != nil {
		return nil
	}
	var out []string
	if s, ok := top.ID.(string); ok && s != "" {
		out = append(out, s)
	}
	if top.Data != nil {
		if s, ok := top.Data.ID.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}
