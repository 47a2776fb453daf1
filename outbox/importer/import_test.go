package importer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/outbox/importer/importertest"
)

// forEachProvider runs test once per provider, in parallel.
func forEachProvider(t *testing.T, test func(t *testing.T, k kit)) {
	t.Helper()
	for _, k := range kits {
		t.Run(k.provider, func(t *testing.T) {
			t.Parallel()
			test(t, k)
		})
	}
}

// TestRun_ImportsEveryUser lists seven users in pages of three through a
// 429 with Retry-After and a transient 500; the replicator folds them into
// users_sync, and a second run inserts nothing.
func TestRun_ImportsEveryUser(t *testing.T) {
	t.Parallel()
	forEachProvider(t, func(t *testing.T, k kit) {
		e := newEnv(t)
		srv := k.fake(t)
		var objs []json.RawMessage
		var want []syncRow
		for n := 1; n <= 7; n++ {
			obj := k.user(n, "v1", baseTime.Add(time.Hour))
			objs = append(objs, obj)
			want = append(want, k.row(n, "v1", obj, false))
		}
		srv.SetUsers(objs...)
		srv.SetFault(func(n int, w http.ResponseWriter, _ *http.Request) bool {
			switch n {
			case 2:
				w.Header().Set("Retry-After", "3")
				w.WriteHeader(http.StatusTooManyRequests)
				return true
			case 3:
				w.WriteHeader(http.StatusInternalServerError)
				return true
			}
			return false
		})
		rec := &sleeps{}
		var progress []Progress
		cfg := e.config(k, srv, rec)
		cfg.Progress = func(p Progress) { progress = append(progress, p) }

		sum := e.mustRun(cfg)
		if sum.Listed != 7 || sum.Inserted != 7 || sum.AlreadyPresent != 0 || sum.Skipped != 0 || sum.Pages != 3 {
			t.Errorf("first run: %+v; want 7 listed and inserted over 3 pages", sum)
		}
		// The 500 is the second failed attempt at the second page.
		if d := rec.all(); len(d) != 2 || d[0] != 3*time.Second || d[1] < 10*time.Millisecond || d[1] > 20*time.Millisecond {
			t.Errorf("waited %v; want the 429's Retry-After (3s), then a second backoff (10ms to 20ms)", d)
		}
		if len(progress) != 3 || progress[2].Summary.Listed != 7 || progress[0].Phase != "listing" {
			t.Errorf("progress reports %+v; want one per page", progress)
		}
		e.waitUsers(want)

		again := e.mustRun(cfg)
		if again.Listed != 7 || again.Inserted != 0 || again.AlreadyPresent != 7 {
			t.Errorf("second run: %+v; want 7 already present, none inserted", again)
		}
		if n := e.count("SELECT count(*) FROM neon_auth.outbox"); n != 7 {
			t.Errorf("outbox holds %d rows after two runs, want 7", n)
		}
		checkNoSecret(t, k, "the logs", e.logs.String())
	})
}

// TestRun_OlderSnapshotKeepsNewerWebhook: a webhook for a later change is
// in the outbox when an import brings an older snapshot of the same user;
// users_sync keeps the webhook's data.
func TestRun_OlderSnapshotKeepsNewerWebhook(t *testing.T) {
	t.Parallel()
	forEachProvider(t, func(t *testing.T, k kit) {
		e := newEnv(t)
		srv := k.fake(t)
		// Clerk and WorkOS date the snapshot by the user's updated_at, an
		// hour before the webhook; Stack Auth by the fetch, so its webhook is
		// for a change made after the listing was fetched.
		webhookAt := baseTime.Add(2 * time.Hour)
		if k.provider == "stack" {
			webhookAt = time.Now().Add(time.Hour)
		}
		body := k.webhook(1, "webhook", webhookAt)
		e.exec(`INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at)
			VALUES ($1, 'user.updated', $2::jsonb, 'msg_webhook', $3)`, k.provider, string(body), webhookAt)
		var data struct{ Data json.RawMessage }
		if err := json.Unmarshal(body, &data); err != nil {
			t.Fatal(err)
		}
		snapshot := k.user(1, "snapshot", baseTime.Add(time.Hour))
		other := k.user(3, "snapshot", baseTime.Add(time.Hour))
		srv.SetUsers(snapshot, other)

		sum := e.mustRun(e.config(k, srv, &sleeps{}))
		if sum.Inserted != 2 {
			t.Errorf("summary %+v; want both snapshots inserted", sum)
		}
		e.waitUsers([]syncRow{k.row(1, "webhook", data.Data, false), k.row(3, "snapshot", other, false)})
		if n := e.count(`SELECT count(*) FROM neon_auth.users_sync_history WHERE user_id = $1 AND operation = 'stale'`, k.userID(1)); n != 1 {
			t.Errorf("%d stale history rows for the older snapshot, want 1", n)
		}
	})
}

// TestRun_PruneMissing soft-deletes exactly the users the listing lacks and
// the provider confirms gone; a user the listing skipped but the provider
// still has, and users of other providers, stay.
func TestRun_PruneMissing(t *testing.T) {
	t.Parallel()
	forEachProvider(t, func(t *testing.T, k kit) {
		e := newEnv(t)
		srv := k.fake(t)
		objs := map[int]json.RawMessage{}
		var all []json.RawMessage
		for n := 1; n <= 6; n++ {
			objs[n] = k.user(n, "v1", baseTime.Add(time.Hour))
			all = append(all, objs[n])
		}
		srv.SetUsers(all...)
		cfg := e.config(k, srv, &sleeps{})
		e.mustRun(cfg)
		e.exec(`INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id)
			VALUES ('generic', 'user.created', '{"id": "g1", "name": "Gen", "email": "g@example.com"}', 'g1')`)
		genericRow := syncRow{ID: "g1", Name: "Gen", Email: "g@example.com", RawJSON: map[string]any{"id": "g1", "name": "Gen", "email": "g@example.com"}}
		var want []syncRow
		for n := 1; n <= 6; n++ {
			want = append(want, k.row(n, "v1", objs[n], false))
		}
		e.waitUsers(append(want, genericRow))

		// Users 2 and 5 are deleted at the provider; user 4 is skipped by
		// the listing but still there.
		srv.SetUsers(objs[1], objs[3], objs[4], objs[6])
		srv.Hide(k.userID(4))
		cfg.PruneMissing = true
		before := time.Now()
		sum := e.mustRun(cfg)
		after := time.Now()
		if sum.Listed != 3 || sum.Checked != 3 || sum.StillPresent != 1 || sum.Deletions != 2 || sum.Inserted != 0 {
			t.Errorf("summary %+v; want 3 listed, 3 checked, 1 still present, 2 deletions, nothing new inserted", sum)
		}
		want[1].Deleted, want[4].Deleted = true, true
		e.waitUsers(append(want, genericRow))
		var deletedAt time.Time
		if err := e.pool.QueryRow(context.Background(), `SELECT deleted_at FROM neon_auth.users_sync WHERE id = $1`,
			k.userID(2)).Scan(&deletedAt); err != nil {
			t.Fatal(err)
		}
		if deletedAt.Before(before.Truncate(time.Millisecond)) || deletedAt.After(after) {
			t.Errorf("deleted_at %v, want the listing's start, between %v and %v", deletedAt, before, after)
		}

		again := e.mustRun(cfg)
		if again.Deletions != 0 || again.Checked != 1 || again.StillPresent != 1 {
			t.Errorf("second prune: %+v; want no new deletions (only the skipped user checked again)", again)
		}
	})
}

// TestRun_InterruptedThenResumed cancels an import half-way through the
// listing, then runs it again: the result is what one run would give.
func TestRun_InterruptedThenResumed(t *testing.T) {
	t.Parallel()
	forEachProvider(t, func(t *testing.T, k kit) {
		e := newEnv(t)
		srv := k.fake(t)
		// A user of this provider that the provider no longer has.
		gone := k.user(99, "old", baseTime)
		e.exec(`INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at)
			VALUES ($1, 'user.created', $2::jsonb, 'seed', $3)`, k.provider, string(gone), baseTime)
		var objs []json.RawMessage
		var want []syncRow
		for n := 1; n <= 7; n++ {
			obj := k.user(n, "v1", baseTime.Add(time.Hour))
			objs = append(objs, obj)
			want = append(want, k.row(n, "v1", obj, false))
		}
		srv.SetUsers(objs...)
		e.waitUsers([]syncRow{k.row(99, "old", gone, false)}) // a prune acts on what users_sync holds
		want = append(want, k.row(99, "old", gone, true))

		ctx, cancel := context.WithCancel(context.Background())
		srv.SetFault(func(n int, _ http.ResponseWriter, r *http.Request) bool {
			if n != 3 {
				return false
			}
			cancel() // killed while fetching the third page
			<-r.Context().Done()
			return true
		})
		cfg := e.config(k, srv, &sleeps{})
		cfg.PageSize, cfg.PruneMissing = 2, true
		sum, err := e.run(ctx, cfg)
		if !errors.Is(err, context.Canceled) || sum.Pages != 2 || sum.Inserted != 4 {
			t.Fatalf("interrupted run: %+v, %v; want context.Canceled after 2 pages of 2", sum, err)
		}
		if n := e.count("SELECT count(*) FROM neon_auth.outbox WHERE event_type = 'user.deleted'"); n != 0 {
			t.Errorf("the interrupted run wrote %d deletions; it never finished listing", n)
		}

		srv.SetFault(nil)
		sum = e.mustRun(cfg)
		if sum.Inserted != 3 || sum.AlreadyPresent != 4 || sum.Deletions != 1 {
			t.Errorf("resumed run: %+v; want the 3 missing users, 4 present, 1 deletion", sum)
		}
		e.waitUsers(want)
		if n := e.count("SELECT count(*) FROM neon_auth.outbox"); n != 9 {
			t.Errorf("outbox holds %d rows, want 9 (seed, 7 users once each, 1 deletion)", n)
		}
	})
}

// TestRun_Unauthorized stops at the first 401 with a sentence naming the
// credential variables, and writes nothing.
func TestRun_Unauthorized(t *testing.T) {
	t.Parallel()
	forEachProvider(t, func(t *testing.T, k kit) {
		e := newEnv(t)
		srv := k.fake(t)
		srv.SetUsers(k.user(1, "v1", baseTime))
		cfg := e.config(k, srv, &sleeps{})
		cfg.Credentials = Credentials{ClerkSecretKey: "sk_test_wrong", StackProjectID: stackProject,
			StackSecretServerKey: "ssk_wrong", WorkOSAPIKey: "sk_test_wrong"}
		_, err := e.run(context.Background(), cfg)
		var ae *AuthError
		if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
			t.Fatalf("Run = %v; want an *AuthError for the 401", err)
		}
		for _, v := range CredentialEnv(k.provider) {
			if !strings.Contains(err.Error(), v) {
				t.Errorf("error %q does not name %s", err, v)
			}
		}
		for _, wrong := range []string{"sk_test_wrong", "ssk_wrong"} {
			if strings.Contains(err.Error()+e.logs.String(), wrong) {
				t.Errorf("the key shows in the error or logs: %v\n%s", err, e.logs.String())
			}
		}
		if srv.Requests() != 1 || e.count("SELECT count(*) FROM neon_auth.outbox") != 0 {
			t.Errorf("%d requests, outbox not empty; want one request and nothing written", srv.Requests())
		}
	})
}

// TestRun_DryRun counts what an import and a prune would write, and writes
// nothing.
func TestRun_DryRun(t *testing.T) {
	t.Parallel()
	forEachProvider(t, func(t *testing.T, k kit) {
		e := newEnv(t)
		srv := k.fake(t)
		gone := k.user(99, "old", baseTime)
		e.exec(`INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at)
			VALUES ($1, 'user.created', $2::jsonb, 'seed', $3)`, k.provider, string(gone), baseTime)
		e.waitUsers([]syncRow{k.row(99, "old", gone, false)})
		var objs []json.RawMessage
		for n := 1; n <= 5; n++ {
			objs = append(objs, k.user(n, "v1", baseTime.Add(time.Hour)))
		}
		srv.SetUsers(objs...)
		cfg := e.config(k, srv, &sleeps{})
		cfg.DryRun, cfg.PruneMissing = true, true
		sum := e.mustRun(cfg)
		if !sum.DryRun || sum.Listed != 5 || sum.Inserted != 5 || sum.Deletions != 1 || sum.Checked != 1 {
			t.Errorf("dry run: %+v; want 5 to insert and 1 deletion", sum)
		}
		if n := e.count("SELECT count(*) FROM neon_auth.outbox"); n != 1 {
			t.Errorf("the dry run wrote: outbox holds %d rows, want the 1 seeded", n)
		}
		cfg.DryRun = false
		if sum := e.mustRun(cfg); sum.Inserted != 5 || sum.Deletions != 1 {
			t.Errorf("real run after the dry run: %+v; want what the dry run counted", sum)
		}
	})
}

// TestRun_RefusesUnmigratedDatabase says what to do.
func TestRun_RefusesUnmigratedDatabase(t *testing.T) {
	t.Parallel()
	k := kits[0]
	srv := importertest.NewClerk(t, clerkKey)
	e := &env{t: t, url: pgtest.NewDatabase(t), logs: &syncBuffer{}}
	_, err := e.run(context.Background(), e.config(k, srv, &sleeps{}))
	if err == nil || !strings.Contains(err.Error(), "replicator migrate") {
		t.Errorf("Run = %v; want a sentence telling to run 'replicator migrate'", err)
	}
	if srv.Requests() != 0 {
		t.Errorf("%d requests to the provider before checking the database", srv.Requests())
	}
}

// TestRun_SkipsWhatPostgresCannotStore: one user object jsonb refuses (an
// unpaired surrogate escape) is skipped and logged; the rest of its page is
// imported, and the import goes on.
func TestRun_SkipsWhatPostgresCannotStore(t *testing.T) {
	t.Parallel()
	k := kits[0]
	e := newEnv(t)
	srv := k.fake(t)
	good1, good3 := k.user(1, "v1", baseTime), k.user(3, "v1", baseTime)
	bad := json.RawMessage(strings.Replace(string(k.user(2, "v1", baseTime)), `"first_name":"First2"`, `"first_name":"\ud800"`, 1))
	srv.SetUsers(good1, bad, good3, k.user(4, "v1", baseTime))
	sum := e.mustRun(e.config(k, srv, &sleeps{}))
	if sum.Listed != 4 || sum.Inserted != 3 || sum.Skipped != 1 || sum.AlreadyPresent != 0 {
		t.Errorf("summary %+v; want 4 listed, 3 inserted, 1 skipped", sum)
	}
	if !strings.Contains(e.logs.String(), k.userID(2)) {
		t.Errorf("the skipped user is not in the logs:\n%s", e.logs.String())
	}
	e.waitUsers([]syncRow{k.row(1, "v1", good1, false), k.row(3, "v1", good3, false), k.row(4, "v1", k.user(4, "v1", baseTime), false)})
}
