package webhook

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usersync/usersync/internal/pgtest"
	"github.com/usersync/usersync/replicator"
)

// slotSeq names each test's replication slot: slots belong to the server,
// which the parallel tests share, not to their databases.
var slotSeq atomic.Int64

// runReplicator runs replicator.Run on url until the test ends.
func runReplicator(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	slot := fmt.Sprintf("webhook_e2e_%d", slotSeq.Add(1))
	go func() { done <- replicator.Run(ctx, replicator.Config{DatabaseURL: url, Slot: slot}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replicator.Run: %v", err)
		}
	})
}

// TestReceiver_EndToEnd sends signed Clerk and Stack Auth deliveries of the
// sample payloads to the receiver and reads the users back from
// neon_auth.users_sync, folded by the replicator.
func TestReceiver_EndToEnd(t *testing.T) {
	t.Parallel()
	clerkKey, clerkSecret := newKey(t, 1)
	stackKey, stackSecret := newKey(t, 2)
	f := newFixture(t, Config{Secrets: map[string]string{"clerk": clerkSecret, "stack": stackSecret}})
	f.keys = map[string][]byte{"clerk": clerkKey, "stack": stackKey}
	runReplicator(t, f.pool.Config().ConnString())

	// Stack Auth's ids are minted an hour apart so its events order by their
	// message time; the updated one is delivered first, as a retry might be.
	base := time.Now().Add(-2 * time.Hour)
	deliveries := []struct{ provider, id, sample string }{
		{"clerk", newMessageID(), "clerk_user.created.json"},
		{"clerk", newMessageID(), "clerk_user.updated.json"},
		{"stack", "msg_" + newKSUID(base.Add(time.Hour)), "stackauth_user.updated.json"},
		{"stack", "msg_" + newKSUID(base), "stackauth_user.created.json"},
	}
	for _, d := range deliveries {
		if a := f.deliver(d.provider, d.id, readSample(t, d.sample)); a.Status != http.StatusOK {
			t.Fatalf("%s: %+v, want 200", d.sample, a)
		}
	}
	wantUser(t, f, "user_29w83sxmDNGwOuEthce5gg56FcC", "Example Renamed", "example.renamed@example.org", false)
	wantUser(t, f, "3da0df92-6f63-4ee2-b33d-3aa56e90d31d", "Jordan R.", "jordan@company.co", false)

	f.deliver("clerk", newMessageID(), readSample(t, "clerk_user.deleted.json"))
	f.deliver("stack", "msg_"+newKSUID(base.Add(90*time.Minute)), readSample(t, "stackauth_user.deleted.json"))
	wantUser(t, f, "user_29w83sxmDNGwOuEthce5gg56FcC", "Example Renamed", "example.renamed@example.org", true)
	wantUser(t, f, "3da0df92-6f63-4ee2-b33d-3aa56e90d31d", "Jordan R.", "jordan@company.co", true)
}

// wantUser waits until users_sync has the user with this name, email and liveness.
func wantUser(t *testing.T, f *fixture, id, name, email string, deleted bool) {
	t.Helper()
	var gotName, gotEmail *string
	var gotDeleted bool
	pgtest.WaitFor(t, 30*time.Second, "users_sync row "+id, func() (bool, error) {
		err := f.pool.QueryRow(context.Background(),
			"SELECT name, email, deleted_at IS NOT NULL FROM neon_auth.users_sync WHERE id = $1", id).
			Scan(&gotName, &gotEmail, &gotDeleted)
		if err != nil {
			return false, err
		}
		return gotName != nil && *gotName == name && gotEmail != nil && *gotEmail == email && gotDeleted == deleted, nil
	})
	var rejects []string
	if err := f.pool.QueryRow(context.Background(), "SELECT coalesce(array_agg(error), '{}') FROM neon_auth.outbox_rejects").Scan(&rejects); err != nil {
		t.Fatal(err)
	}
	if len(rejects) > 0 {
		t.Errorf("the replicator rejected deliveries: %q", rejects)
	}
}

// TestReceiver_EndToEnd_WorkOS sends signed WorkOS deliveries of the sample
// events, the update before the create as a retry might, and reads the user
// back from neon_auth.users_sync, folded by the replicator.
func TestReceiver_EndToEnd_WorkOS(t *testing.T) {
	t.Parallel()
	f := newWorkOSFixture(t)
	runReplicator(t, f.pool.Config().ConnString())
	const user = "user_01HQ3D8JZ4W2B7C9E1F3G5H7JK"
	for _, sample := range []string{"workos_user.updated.json", "workos_user.created.json"} {
		if a := f.deliverWorkOS(time.Now(), readSample(t, sample)); a.Status != http.StatusOK || a.Outcome != "stored" {
			t.Fatalf("%s: %+v, want 200 stored", sample, a)
		}
	}
	wantUser(t, f, user, "Amara Okafor-Reyes", "amara@okafor.dev", false)
	if a := f.deliverWorkOS(time.Now(), readSample(t, "workos_user.deleted.json")); a.Status != http.StatusOK {
		t.Fatalf("user.deleted: %+v, want 200", a)
	}
	wantUser(t, f, user, "Amara Okafor-Reyes", "amara@okafor.dev", true)
	var created, updated time.Time
	if err := f.pool.QueryRow(context.Background(), "SELECT created_at, updated_at FROM neon_auth.users_sync WHERE id = $1", user).Scan(&created, &updated); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2024, 2, 20, 9, 15, 2, 417e6, time.UTC); !created.Equal(want) {
		t.Errorf("created_at = %v, want %v", created, want)
	}
	if want := time.Date(2024, 2, 21, 8, 2, 10, 986e6, time.UTC); !updated.Equal(want) {
		t.Errorf("updated_at = %v, want %v", updated, want)
	}
}
