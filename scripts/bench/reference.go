package main

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// referenceSQL folds the whole outbox in one set-based transaction; see the file.
//
//go:embed reference.sql
var referenceSQL string

// runReference runs the reference fold in one transaction and returns how
// long it took, commit included.
func runReference(ctx context.Context, conn *pgx.Conn) (time.Duration, error) {
	start := time.Now()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("reference: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// Without arguments pgx sends the file as one simple query, statement after statement.
	if _, err := tx.Exec(ctx, referenceSQL); err != nil {
		return 0, fmt.Errorf("reference: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("reference: commit: %w", err)
	}
	return time.Since(start), nil
}

// comparison is one table compared between the replicator's database and
// the reference's, row by row: rows are matched by key and compared by a
// canonical text of their values.
type comparison struct {
	what  string
	from  string // the FROM clause, with the table aliased t
	key   string // orders and matches the rows
	canon string // the row's values as text, equal exactly when the values are
}

// imageCanon renders a history image so that equal rows give equal text:
// times as values (the replicator writes them in Go's format, the
// reference in PostgreSQL's), raw_json as jsonb, and the set of keys.
func imageCanon(col string) string {
	return fmt.Sprintf(`CASE WHEN %[1]s IS NULL THEN 'null' ELSE jsonb_build_object(
		'keys', (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(%[1]s) k),
		'id', %[1]s -> 'id', 'name', %[1]s -> 'name', 'email', %[1]s -> 'email',
		'created_at', (%[1]s ->> 'created_at')::timestamptz, 'updated_at', (%[1]s ->> 'updated_at')::timestamptz,
		'deleted_at', (%[1]s ->> 'deleted_at')::timestamptz, 'raw_json', %[1]s -> 'raw_json')::text END`, col)
}

var comparisons = []comparison{
	{
		what: "users_sync", from: "neon_auth.users_sync t", key: "t.id",
		canon: "ROW(t.name, t.email, t.created_at, t.updated_at, t.deleted_at, t.raw_json)::text",
	},
	{
		what: "users_sync_state", from: "neon_auth.users_sync_state t", key: "t.user_id",
		canon: "ROW(t.profile_at, t.profile_outbox_id, t.last_at, t.last_outbox_id)::text",
	},
	{
		what: "history operations", from: "neon_auth.users_sync_history t",
		key: "lpad(t.outbox_id::text, 20, '0')", canon: "t.operation",
	},
	{
		what: "history rows", from: "neon_auth.users_sync_history t", key: "lpad(t.outbox_id::text, 20, '0')",
		canon: "concat_ws(' | ', t.user_id, t.operation, t.provider, t.event_type, t.event_id, t.occurred_at::text, " +
			"t.source_lsn::text, t.source_committed_at::text, " + imageCanon("t.before") + ", " + imageCanon("t.after") + ")",
	},
}

// tableCheck is the outcome of one comparison.
type tableCheck struct {
	What                  string
	Rows, ReferenceRows   int
	Differ, OnlyOneSide   int
	FirstDifference       string // empty when equal
	firstKey, firstSource string
}

func (c tableCheck) equal() bool { return c.Differ == 0 && c.OnlyOneSide == 0 }

// referenceCheck is the comparison of the two databases after the backfill.
type referenceCheck struct {
	Tables []tableCheck
}

// Matched reports whether every table was equal.
func (r referenceCheck) Matched() bool {
	for _, t := range r.Tables {
		if !t.equal() {
			return false
		}
	}
	return len(r.Tables) > 0
}

// compareResults compares the replicator's results (in rep) with the
// reference's (in ref), table by table.
func compareResults(ctx context.Context, rep, ref *pgx.Conn) (referenceCheck, error) {
	var out referenceCheck
	for _, c := range comparisons {
		tc, err := compareTable(ctx, rep, ref, c)
		if err != nil {
			return out, fmt.Errorf("compare %s: %w", c.what, err)
		}
		out.Tables = append(out.Tables, tc)
	}
	return out, nil
}

// compareTable merges the two sides' rows, both ordered by key, comparing
// digests; the first difference is then shown in full.
func compareTable(ctx context.Context, rep, ref *pgx.Conn, c comparison) (tableCheck, error) {
	list := fmt.Sprintf(`SELECT %[1]s, md5(%[2]s) FROM %[3]s ORDER BY %[1]s COLLATE "C"`, c.key, c.canon, c.from)
	tc := tableCheck{What: c.what}
	a, err := rep.Query(ctx, list)
	if err != nil {
		return tc, err
	}
	defer a.Close()
	b, err := ref.Query(ctx, list)
	if err != nil {
		return tc, err
	}
	defer b.Close()
	var ka, va, kb, vb string
	nextA := func() bool { return a.Next() && a.Scan(&ka, &va) == nil }
	nextB := func() bool { return b.Next() && b.Scan(&kb, &vb) == nil }
	okA, okB := nextA(), nextB()
	note := func(key, side string) {
		if tc.firstKey == "" {
			tc.firstKey, tc.firstSource = key, side
		}
	}
	for okA || okB {
		switch {
		case okA && (!okB || ka < kb):
			tc.Rows++
			tc.OnlyOneSide++
			note(ka, "only the replicator has it")
			okA = nextA()
		case okB && (!okA || kb < ka):
			tc.ReferenceRows++
			tc.OnlyOneSide++
			note(kb, "only the reference has it")
			okB = nextB()
		default:
			tc.Rows++
			tc.ReferenceRows++
			if va != vb {
				tc.Differ++
				note(ka, "")
			}
			okA, okB = nextA(), nextB()
		}
	}
	if err := a.Err(); err != nil {
		return tc, err
	}
	if err := b.Err(); err != nil {
		return tc, err
	}
	a.Close()
	b.Close()
	if tc.firstKey != "" {
		tc.FirstDifference, err = describeDifference(ctx, rep, ref, c, tc.firstKey, tc.firstSource)
	}
	return tc, err
}

func describeDifference(ctx context.Context, rep, ref *pgx.Conn, c comparison, key, side string) (string, error) {
	detail := fmt.Sprintf("SELECT %s FROM %s WHERE %s = $1", c.canon, c.from, c.key)
	show := func(conn *pgx.Conn) (string, error) {
		var s string
		err := conn.QueryRow(ctx, detail, key).Scan(&s)
		if err == pgx.ErrNoRows {
			return "(none)", nil
		}
		return s, err
	}
	got, err := show(rep)
	if err != nil {
		return "", err
	}
	want, err := show(ref)
	if err != nil {
		return "", err
	}
	if side != "" {
		side = " (" + side + ")"
	}
	got, want = excerpts(got, want)
	return fmt.Sprintf("%s %s%s:\n  replicator: %s\n  reference:  %s", c.what, key, side, got, want), nil
}

// excerpts cuts two long texts down to where they first differ.
func excerpts(a, b string) (string, string) {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	cut := func(s string) string {
		from, to := max(0, i-100), min(len(s), i+150)
		out := s[from:to]
		if from > 0 {
			out = "…" + out
		}
		if to < len(s) {
			out += "…"
		}
		return out
	}
	return cut(a), cut(b)
}
