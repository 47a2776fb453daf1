package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
)

// checkResult is what the final check found.
type checkResult struct {
	outboxRows, history, rejects int64
	notExactlyOnce, orphans      int64 // outbox rows without exactly one history-or-reject row; history/rejects without an outbox row
	users, foldUsers             int
	differing                    []string // users whose users_sync row differs from the pure fold
	acked, ackedMissing          int
	missingExamples              []string
}

func (r checkResult) ok() bool {
	return r.outboxRows > 0 && r.notExactlyOnce == 0 && r.orphans == 0 && r.users == r.foldUsers &&
		len(r.differing) == 0 && r.ackedMissing == 0
}

func (r checkResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invariants:\n")
	fmt.Fprintf(&b, "  exactly once: %d outbox rows, %d history + %d reject rows; %d rows without exactly one, %d orphans\n",
		r.outboxRows, r.history, r.rejects, r.notExactlyOnce, r.orphans)
	fmt.Fprintf(&b, "  fold equality: users_sync has %d rows, the pure fold of the outbox (outbox.Decode + outbox.Fold) %d; %d differ\n",
		r.users, r.foldUsers, len(r.differing))
	for _, d := range r.differing[:min(len(r.differing), 5)] {
		fmt.Fprintf(&b, "    %s\n", d)
	}
	fmt.Fprintf(&b, "  ingest: %d acknowledged messages, %d missing from the outbox", r.acked, r.ackedMissing)
	for _, m := range r.missingExamples {
		fmt.Fprintf(&b, "\n    %s", m)
	}
	return b.String()
}

// check verifies SPEC.md's guarantees on the final state: every outbox row
// has exactly one history row or one reject; users_sync equals the fold of
// the outbox computed from scratch here; every message ingest acknowledged
// is in the outbox.
func check(ctx context.Context, url string, acked []delivery) (checkResult, error) {
	var r checkResult
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return r, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM neon_auth.outbox),
			(SELECT count(*) FROM neon_auth.users_sync_history),
			(SELECT count(*) FROM neon_auth.outbox_rejects),
			(SELECT count(*) FROM neon_auth.outbox o
				WHERE (SELECT count(*) FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
				    + (SELECT count(*) FROM neon_auth.outbox_rejects j WHERE j.outbox_id = o.id) <> 1),
			(SELECT count(*) FROM neon_auth.users_sync_history h WHERE NOT EXISTS (SELECT 1 FROM neon_auth.outbox o WHERE o.id = h.outbox_id))
			+ (SELECT count(*) FROM neon_auth.outbox_rejects j WHERE NOT EXISTS (SELECT 1 FROM neon_auth.outbox o WHERE o.id = j.outbox_id))`).
		Scan(&r.outboxRows, &r.history, &r.rejects, &r.notExactlyOnce, &r.orphans)
	if err != nil {
		return r, fmt.Errorf("count: %w", err)
	}
	want, err := pureFold(ctx, conn)
	if err != nil {
		return r, err
	}
	got, err := readUsers(ctx, conn)
	if err != nil {
		return r, err
	}
	r.users, r.foldUsers = len(got), len(want)
	for id, w := range want {
		if g := got[id]; !outbox.RowsEqual(g, w) {
			r.differing = append(r.differing, fmt.Sprintf("%s: users_sync %s, fold %s", id, rowJSON(g), w.JSON()))
		}
	}
	for id := range got {
		if want[id] == nil {
			r.differing = append(r.differing, fmt.Sprintf("%s: in users_sync, not in the fold", id))
		}
	}
	r.acked = len(acked)
	for _, m := range acked {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.outbox WHERE provider = $1 AND event_id = $2`, m.provider, m.id).Scan(&n); err != nil {
			return r, err
		}
		if n != 1 {
			r.ackedMissing++
			if len(r.missingExamples) < 5 {
				r.missingExamples = append(r.missingExamples, m.provider+" "+m.id)
			}
		}
	}
	return r, nil
}

func rowJSON(r *outbox.Row) string {
	if r == nil {
		return "(none)"
	}
	return string(r.JSON())
}

// pureFold folds the whole outbox in memory, in id order, with no database
// logic involved.
func pureFold(ctx context.Context, conn *pgx.Conn) (map[string]*outbox.Row, error) {
	rows, err := conn.Query(ctx, `SELECT id, provider, event_type, payload::text, event_id, occurred_at, received_at
		FROM neon_auth.outbox ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	states := map[string]outbox.State{}
	for rows.Next() {
		var rec outbox.Record
		var payload string
		if err := rows.Scan(&rec.ID, &rec.Provider, &rec.EventType, &payload, &rec.EventID, &rec.OccurredAt, &rec.ReceivedAt); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		rec.Payload = []byte(payload)
		if rec.OccurredAt != nil {
			u := rec.OccurredAt.UTC()
			rec.OccurredAt = &u
		}
		rec.ReceivedAt = rec.ReceivedAt.UTC()
		ev, err := outbox.Decode(rec)
		if err != nil {
			continue // a reject
		}
		states[ev.UserID], _ = outbox.Fold(states[ev.UserID], ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	out := map[string]*outbox.Row{}
	for id, st := range states {
		if st.Row != nil {
			out[id] = st.Row
		}
	}
	return out, nil
}

func readUsers(ctx context.Context, conn *pgx.Conn) (map[string]*outbox.Row, error) {
	rows, err := conn.Query(ctx, `SELECT id, name, email, created_at, updated_at, deleted_at, raw_json::text FROM neon_auth.users_sync`)
	if err != nil {
		return nil, fmt.Errorf("read users_sync: %w", err)
	}
	defer rows.Close()
	out := map[string]*outbox.Row{}
	for rows.Next() {
		var r outbox.Row
		var raw string
		if err := rows.Scan(&r.ID, &r.Name, &r.Email, &r.CreatedAt, &r.UpdatedAt, &r.DeletedAt, &raw); err != nil {
			return nil, fmt.Errorf("read users_sync: %w", err)
		}
		r.RawJSON = json.RawMessage(raw)
		out[r.ID] = &r
	}
	return out, rows.Err()
}
