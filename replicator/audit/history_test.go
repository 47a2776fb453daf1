package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/usersync/usersync/outbox"
)

// scriptedUser streams ada's life, one event per transaction, and returns
// the server's time after each was applied.
func scriptedUser(t *testing.T, db *testDB) []time.Time {
	t.Helper()
	db.start()
	var after []time.Time
	for _, ev := range []event{
		generic("user.created", "ada", "Ada", 1),
		generic("user.updated", "ada", "Grace", 3),
		generic("user.updated", "ada", "Stale", 2),
		generic("user.deleted", "ada", "x", 4),
	} {
		db.insert(ev)
		db.waitCaughtUp()
		var now time.Time
		if err := db.conn.QueryRow(context.Background(), "SELECT clock_timestamp()").Scan(&now); err != nil {
			t.Fatal(err)
		}
		after = append(after, now)
	}
	return after
}

func TestHistory_ScriptedUser(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	scriptedUser(t, db)
	entries, err := History(context.Background(), db.conn, "ada", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		changes, _ := json.Marshal(e.Changes)
		got = append(got, fmt.Sprintf("%s %s %s", e.Operation, *e.EventType, changes))
	}
	want := []string{
		`insert user.created {"name":[null,"Ada"],"email":[null,"ada@example.com"],"updated_at":[null,"2026-01-01T00:00:01.000000Z"],"raw_json":[null,{"id":"ada","name":"Ada","email":"ada@example.com"}]}`,
		`update user.updated {"name":["Ada","Grace"],"email":["ada@example.com","grace@example.com"],"updated_at":["2026-01-01T00:00:01.000000Z","2026-01-01T00:00:03.000000Z"],"raw_json":[{"id":"ada","name":"Ada","email":"ada@example.com"},{"id":"ada","name":"Grace","email":"grace@example.com"}]}`,
		`stale user.updated {}`,
		`delete user.deleted {"deleted_at":[null,"2026-01-01T00:00:04.000000Z"]}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("history:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, e := range entries {
		if e.SourceLSN == nil || e.OutboxID == nil || e.EventID != nil || *e.Provider != "generic" {
			t.Errorf("entry %+v: want a source LSN, an outbox id, provider generic and no event id", e)
		}
	}
	last, err := History(context.Background(), db.conn, "ada", 2)
	if err != nil || len(last) != 2 || last[0].Operation != "stale" || last[1].Operation != "delete" {
		t.Errorf("--limit 2 gave %d entries (%v), want the last two: stale, delete", len(last), err)
	}
	if none, err := History(context.Background(), db.conn, "nobody", 0); err != nil || len(none) != 0 {
		t.Errorf("unknown user: %v, %v; want nothing", none, err)
	}
}

func TestAsOf_ScriptedUser(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	before := time.Now().Add(-time.Hour)
	after := scriptedUser(t, db)
	db.insert(generic("user.created", "bob", "Bob", 1))
	db.waitCaughtUp()
	asOf := func(at time.Time, ids ...string) []string {
		t.Helper()
		var out []string
		err := AsOf(context.Background(), db.conn, at, ids, func(r outbox.Row) error {
			out = append(out, fmt.Sprintf("%s:%s:%v", r.ID, *r.Name, r.DeletedAt != nil))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cases := []struct {
		at   time.Time
		ids  []string
		want string
	}{
		{before, nil, "[]"},
		{after[0], nil, "[ada:Ada:false]"},
		{after[1], []string{"ada"}, "[ada:Grace:false]"},
		{after[2], []string{"ada"}, "[ada:Grace:false]"},
		{after[3], nil, "[ada:Grace:true]"},
		{time.Now().Add(time.Hour), nil, "[ada:Grace:true bob:Bob:false]"},
		{time.Now().Add(time.Hour), []string{"bob", "nobody"}, "[bob:Bob:false]"},
	}
	for i, tc := range cases {
		if got := fmt.Sprint(asOf(tc.at, tc.ids...)); got != tc.want {
			t.Errorf("case %d: as-of %s %v = %s, want %s", i, tc.at.Format(time.RFC3339Nano), tc.ids, got, tc.want)
		}
	}
}
