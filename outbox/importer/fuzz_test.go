package importer

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/usersync/usersync/outbox"
	"github.com/usersync/usersync/outbox/importer/importertest"
)

// FuzzBuildRow feeds any bytes to the row mapping as a listed user of any
// provider: it never panics; an accepted object keeps its bytes, gets an
// event id naming the same user the fold will see, and the same id whatever
// the object's layout.
func FuzzBuildRow(f *testing.F) {
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Add(uint8(0), []byte(importertest.ClerkUser("user_1", "A", "B", "a@x.org", at, at)))
	f.Add(uint8(1), []byte(importertest.StackUser("6f0c1d2e-0000-4000-8000-000000000001", "A", "a@x.org", at, true)))
	f.Add(uint8(2), []byte(importertest.WorkOSUser("user_01X", "A", "B", "a@x.org", at, at)))
	f.Add(uint8(0), []byte(`{"id":"u","updated_at":1.5e12,"x":"\u0000"}`))
	f.Add(uint8(2), []byte(`{"updated_at":"2024-01-01 00:00:00","id":"w"}`))
	f.Fuzz(func(t *testing.T, which uint8, user []byte) {
		provider := Providers[int(which)%len(Providers)]
		fetched := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		row, err := buildRow(provider, user, fetched)
		if err != nil {
			return
		}
		if !bytes.Equal(row.payload, user) || hasNULEscape(row.payload) {
			t.Fatalf("payload %q changed or holds \\u0000", row.payload)
		}
		if !strings.HasPrefix(row.eventID, "import:") || !strings.HasSuffix(row.eventID, ":"+row.userID) {
			t.Fatalf("event id %q does not name user %q", row.eventID, row.userID)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, user); err != nil {
			t.Fatalf("accepted invalid JSON %q", user)
		}
		if again, err := buildRow(provider, compact.Bytes(), fetched); err != nil || again.eventID != row.eventID {
			t.Fatalf("the compacted object maps to %q, %v; want %q", again.eventID, err, row.eventID)
		}
		ev, err := outbox.Decode(outbox.Record{ID: 1, Provider: provider, EventType: outbox.TypeUpdated, Payload: user})
		var rej *outbox.RejectError
		switch {
		case errors.As(err, &rej):
			// The fold rejects it with a reason; importing it records that.
		case err != nil:
			t.Fatalf("Decode: %v", err)
		case ev.UserID != row.userID:
			t.Fatalf("the fold sees user %q, the event id names %q", ev.UserID, row.userID)
		}
	})
}
