package replicator

import (
	"encoding/json"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
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

// forgottenCandidates lists the users whose erasure matters to the batch:
// those of its events, and those that its rejects' payloads name.
func (in *foldInput) forgottenCandidates() []string {
	ids := slices.Clip(in.userIDs) // appending must not write into in.userIDs' spare room
	for _, r := range in.rejects {
		ids = append(ids, namedUsers(r.src.Payload)...)
	}
	return ids
}

// readForgotten reads the result of forgottenSQL into in.forgotten.
func (in *foldInput) readForgotten(br pgx.BatchResults) error {
	rows, _ := br.Query()
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	in.forgotten = make(map[string]bool, len(ids))
	for _, id := range ids {
		in.forgotten[id] = true
	}
	return nil
}

// forgottenEntry records ev, an event of a forgotten user, without images,
// and queues its payload for redaction.
func (in *foldInput) forgottenEntry(ev *outbox.Event, src *sourceRecord) historyEntry {
	in.redact = append(in.redact, redaction{outboxID: ev.OutboxID, userID: ev.UserID})
	return historyEntry{ev: ev, src: src, op: outbox.OpForgotten}
}

// redactedPayload returns the payload to store for a reject: its own, or
// the redacted one when it names a forgotten user (queued for redaction in
// the outbox too).
func (in *foldInput) redactedPayload(r pendingReject) string {
	for _, id := range namedUsers(r.src.Payload) {
		if in.forgotten[id] {
			in.redact = append(in.redact, redaction{outboxID: r.src.ID, userID: id})
			b, _ := json.Marshal(map[string]any{"id": id, "forgotten": true})
			return string(b)
		}
	}
	return string(r.src.Payload)
}

// queueRedactions queues the redaction of the outbox rows in rs.
func (w *writeBatch) queueRedactions(rs []redaction) {
	if len(rs) == 0 {
		return
	}
	ids, users := make([]int64, len(rs)), make([]string, len(rs))
	for i, r := range rs {
		ids[i], users[i] = r.outboxID, r.userID
	}
	w.b.Queue(redactSQL, ids, users)
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
