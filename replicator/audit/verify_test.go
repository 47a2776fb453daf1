package audit

import (
	"context"
	"fmt"
	"slices"
	"testing"
)

// scriptedEvents covers every shape of the fold: out-of-order updates, a
// delete, a tombstone filled in by an older profile, a stale event, and
// rejects.
func scriptedEvents() []event {
	return []event{
		generic("user.created", "ada", "Ada", 1),
		generic("user.updated", "ada", "Grace", 3),
		generic("user.updated", "ada", "Stale", 2),
		generic("user.created", "bob", "Bob", 1),
		generic("user.deleted", "bob", "Bob", 5),
		generic("user.deleted", "tom", "Tom", 9),
		generic("user.created", "tom", "Tom", 1),
		{provider: "generic", typ: "user.created", payload: `{"name": "no id"}`},
		{provider: "generic", typ: "user.updated", payload: `{"id": "ada", "created_at": "yesterday"}`},
	}
}

func TestVerify_CleanAlteredResynced(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.insert(scriptedEvents()[:4]...) // folded by the catch-up
	db.start()
	for _, ev := range scriptedEvents()[4:] {
		db.insert(ev) // streamed, one transaction each
	}
	db.waitCaughtUp()

	report, diffs := db.verify(VerifyConfig{})
	if len(diffs) != 0 || report.Differences != 0 {
		t.Fatalf("verify on a clean database found %d differences:%s", report.Differences, describe(diffs))
	}
	if report.OutboxRows != 9 || report.Folded != 7 || report.Rejected != 2 || report.Users != 3 {
		t.Errorf("report = %+v, want 9 rows, 7 folded, 2 rejected, 3 users", report)
	}

	db.exec("UPDATE neon_auth.users_sync SET name = 'Mallory' WHERE id = 'ada'")
	db.exec("UPDATE neon_auth.users_sync_state SET last_outbox_id = 1 WHERE user_id = 'bob'")
	db.exec("DELETE FROM neon_auth.users_sync WHERE id = 'tom'")
	db.exec("INSERT INTO neon_auth.users_sync (id, raw_json) VALUES ('ghost', '{}')")
	_, diffs = db.verify(VerifyConfig{})
	got := map[string]Difference{}
	for _, d := range diffs {
		got[d.UserID+"/"+d.Column] = d
	}
	if d := got["ada/name"]; d.Want == nil || *d.Want.(*string) != "Grace" || *d.Got.(*string) != "Mallory" {
		t.Errorf("ada/name difference = %+v, want Grace vs Mallory", d)
	}
	for _, key := range []string{"bob/last_outbox_id", "tom/row", "ghost/row"} {
		if _, ok := got[key]; !ok {
			t.Errorf("no difference %s among:%s", key, describe(diffs))
		}
	}

	var repaired []string
	rr, err := Resync(context.Background(), db.conn, ResyncConfig{All: true, Verify: VerifyConfig{Slot: db.slot},
		OnRepair: func(r Repair) error { repaired = append(repaired, r.UserID); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(repaired)
	if fmt.Sprint(repaired) != "[ada bob ghost tom]" || rr.Repaired != 4 {
		t.Errorf("resync repaired %v (%+v), want ada, bob, ghost and tom", repaired, rr)
	}
	if n := db.count("SELECT count(*) FROM neon_auth.users_sync_history WHERE operation = 'resync'"); n != 4 {
		t.Errorf("%d resync history rows, want 4", n)
	}
	if _, diffs = db.verify(VerifyConfig{}); len(diffs) != 0 {
		t.Errorf("verify after resync:%s", describe(diffs))
	}
	db.checkMatchesPureFold()
	rr, err = Resync(context.Background(), db.conn, ResyncConfig{UserIDs: []string{"ada", "bob", "tom", "ghost"}})
	if err != nil || rr.Repaired != 0 || rr.Checked != 4 {
		t.Errorf("second resync: %+v, %v; want 4 checked, none repaired", rr, err)
	}
}

func TestVerify_ManyPassesFindTheSame(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	var evs []event
	for i := range 60 {
		id := fmt.Sprintf("u%02d", i)
		evs = append(evs, generic("user.created", id, "First"+id, 1), generic("user.updated", id, "Second"+id, 2+i%3))
		if i%7 == 0 {
			evs = append(evs, generic("user.deleted", id, "x", 10))
		}
	}
	db.insert(evs...)
	db.start()
	db.waitCaughtUp()
	db.exec("UPDATE neon_auth.users_sync SET email = 'x@y' WHERE id IN ('u03', 'u41')")
	db.exec("UPDATE neon_auth.users_sync SET deleted_at = NULL WHERE id = 'u14'")
	one, diffsOne := db.verify(VerifyConfig{})
	many, diffsMany := db.verify(VerifyConfig{UsersPerPass: 7, PageSize: 5})
	if one.Passes != 1 || many.Passes != 9 {
		t.Errorf("passes %d and %d, want 1 and 9", one.Passes, many.Passes)
	}
	key := func(ds []Difference) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.UserID+"/"+d.Column)
		}
		slices.Sort(out)
		return out
	}
	if a, b := key(diffsOne), key(diffsMany); fmt.Sprint(a) != "[u03/email u14/deleted_at u41/email]" || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("one pass found %v, nine passes %v; want u03/email u14/deleted_at u41/email from both", a, b)
	}
	if one.Users != 60 || many.Users != 60 || one.OutboxRows != many.OutboxRows {
		t.Errorf("reports differ: %+v vs %+v", one, many)
	}
}

func TestVerify_Accounting(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	r := db.start()
	ids := db.insert(generic("user.created", "ada", "Ada", 1), generic("user.created", "bob", "Bob", 1))
	db.waitCaughtUp()
	// A row counted twice, and a row whose history row vanished although
	// the slot has long confirmed past it.
	db.exec(`INSERT INTO neon_auth.outbox_rejects (outbox_id, error) VALUES ($1, 'forged')`, ids[0])
	db.exec(`DELETE FROM neon_auth.users_sync_history WHERE outbox_id = $1`, ids[1])
	_, diffs := db.verify(VerifyConfig{})
	want := map[string]bool{
		fmt.Sprintf("%d/accounting/both", ids[0]):                                               true,
		fmt.Sprintf("%d/accounting/neither, though the slot confirmed past its commit", ids[1]): true,
	}
	for _, d := range diffs {
		if d.UserID != "" {
			continue
		}
		key := fmt.Sprintf("%d/%s/%v", d.OutboxID, d.Column, d.Got)
		if !want[key] {
			t.Errorf("unexpected accounting difference %s", key)
		}
		delete(want, key)
	}
	for k := range want {
		t.Errorf("missing accounting difference %s among:%s", k, describe(diffs))
	}

	// With no replicator, a pending row is not judged: nobody is folding it.
	r.stop(t)
	db.exec(`DELETE FROM neon_auth.outbox_rejects WHERE error = 'forged'`)
	db.insert(generic("user.created", "cy", "Cy", 1))
	report, diffs := db.verify(VerifyConfig{})
	for _, d := range diffs {
		if d.UserID == "" && d.OutboxID != ids[1] {
			t.Errorf("difference for a row nobody folds yet: %+v", d)
		}
	}
	if report.Pending != 2 {
		t.Errorf("pending = %d, want 2 (the lost row and the new one, unchecked without a replicator)", report.Pending)
	}
}
