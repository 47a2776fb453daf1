package audit

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
)

// The erased user's data, as distinctive strings to search every row for.
const (
	erinName  = "Erin Zyxwvut"
	erinEmail = "erin.qwertyuiop@example.org"
)

var erinEvents = []event{
	{provider: "generic", typ: "user.created", occurredAt: at(1),
		payload: `{"id": "erin", "name": "` + erinName + `", "email": "` + erinEmail + `"}`},
	{provider: "clerk", typ: "user.updated", occurredAt: at(2),
		payload: `{"type": "user.updated", "data": {"id": "erin", "first_name": "Erin", "last_name": "Zyxwvut",
			"email_addresses": [{"id": "e1", "email_address": "` + erinEmail + `"}], "primary_email_address_id": "e1"}}`},
	// Malformed: rejected, with the data in the reject's payload.
	{provider: "generic", typ: "user.updated", occurredAt: at(3),
		payload: `{"id": "erin", "name": "` + erinName + `", "email": "` + erinEmail + `", "updated_at": "soon"}`},
}

// findPII counts, in every table of schema neon_auth, the rows whose text
// contains the erased user's name or email.
func (db *testDB) findPII() map[string]int64 {
	db.t.Helper()
	ctx := context.Background()
	rows, _ := db.conn.Query(ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'neon_auth'")
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) < 7 {
		db.t.Fatalf("list tables: %v (%d)", err, len(tables))
	}
	found := map[string]int64{}
	for _, tbl := range tables {
		for _, s := range []string{erinEmail, "Zyxwvut", "qwertyuiop"} {
			n := db.count(fmt.Sprintf("SELECT count(*) FROM neon_auth.%s t WHERE t::text LIKE '%%' || $1 || '%%'", pgx.Identifier{tbl}.Sanitize()), s)
			if n > 0 {
				found[tbl+" "+s] = n
			}
		}
	}
	return found
}

func TestForget_ErasesAndStaysErased(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	r := db.start()
	for _, ev := range erinEvents {
		db.insert(ev)
	}
	db.insert(generic("user.created", "bob", "Bob", 1))
	db.waitCaughtUp()
	if found := db.findPII(); len(found) == 0 {
		t.Fatal("the test's PII is nowhere before forget: the search cannot fail")
	}

	report, err := Forget(context.Background(), db.conn, "erin", "ticket 42")
	if err != nil {
		t.Fatal(err)
	}
	if !report.RowRemoved || report.HistoryCleared != 2 || report.OutboxRedacted != 3 || report.RejectsRedacted != 1 || report.AlreadyForgotten {
		t.Errorf("report = %+v, want the row removed, 2 history rows cleared, 3 outbox and 1 reject payloads redacted", report)
	}
	if found := db.findPII(); len(found) != 0 {
		t.Errorf("after forget, the user's data is still in: %v", found)
	}
	if n := db.count("SELECT count(*) FROM neon_auth.users_sync_history WHERE user_id = 'erin' AND event_id IS NULL AND outbox_id IS NOT NULL"); n != 2 {
		t.Errorf("history rows kept with their bookkeeping: %d, want 2", n)
	}
	if _, diffs := db.verify(VerifyConfig{}); len(diffs) != 0 {
		t.Errorf("verify after forget:%s", describe(diffs))
	}

	// A redelivery of each old webhook, streamed: recorded as forgotten or
	// rejected, redacted, and the user does not come back.
	for _, ev := range erinEvents {
		db.insert(ev)
	}
	db.waitCaughtUp()
	// And once more through the catch-up, with the replicator down.
	r.stop(t)
	db.insert(erinEvents[0])
	db.start()
	db.waitCaughtUp()

	if found := db.findPII(); len(found) != 0 {
		t.Errorf("after redeliveries, the user's data is back in: %v", found)
	}
	if n := db.count("SELECT count(*) FROM neon_auth.users_sync_history WHERE user_id = 'erin' AND operation = 'forgotten'"); n != 3 {
		t.Errorf("%d history rows with operation forgotten, want 3 (two streamed, one caught up)", n)
	}
	if n := db.count("SELECT count(*) FROM neon_auth.users_sync WHERE id = 'erin'") + db.count("SELECT count(*) FROM neon_auth.users_sync_state WHERE user_id = 'erin'"); n != 0 {
		t.Errorf("the forgotten user came back: %d rows", n)
	}
	if n := db.count("SELECT count(*) FROM neon_auth.users_sync WHERE id = 'bob' AND name = 'Bob'"); n != 1 {
		t.Error("another user was touched")
	}
	db.checkExactlyOnce()
	if _, diffs := db.verify(VerifyConfig{}); len(diffs) != 0 {
		t.Errorf("verify after redeliveries:%s", describe(diffs))
	}
	again, err := Forget(context.Background(), db.conn, "erin", "again")
	if err != nil || !again.AlreadyForgotten || again.OutboxRedacted != 0 {
		t.Errorf("second forget: %+v, %v; want already forgotten with nothing left to redact", again, err)
	}
}
