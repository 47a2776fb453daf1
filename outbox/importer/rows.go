package importer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/usersync/usersync/outbox"
)

// importRow is the outbox row of one listed user.
type importRow struct {
	userID string
	// eventID is import:<version>:<user id>; the same user in the same
	// version always gets the same one, so re-importing it is a no-op.
	eventID string
	// payload is the user object as the API returned it.
	payload json.RawMessage
	// occurredAt is the user's updated_at, else when its page was fetched.
	occurredAt time.Time
}

// buildRow maps one user object of a listing to its outbox row. An error
// means the object cannot be imported at all (no usable id, or text Postgres
// cannot store); anything else the fold checks itself, and rejects with a
// reason if it must.
func buildRow(provider string, user json.RawMessage, fetchedAt time.Time) (importRow, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(user, &top); err != nil || top == nil {
		return importRow{}, errors.New("not a JSON object")
	}
	var id string
	if err := json.Unmarshal(top["id"], &id); err != nil || id == "" {
		return importRow{}, errors.New(`no "id" string`)
	}
	if len(id) > outbox.MaxUserIDBytes || strings.IndexByte(id, 0) >= 0 {
		return importRow{}, fmt.Errorf("id %.40q... is not a user id usersync can store", id)
	}
	if hasNULEscape(user) {
		return importRow{}, fmt.Errorf(`user %q holds \u0000, which Postgres jsonb cannot store`, id)
	}
	row := importRow{userID: id, payload: user, occurredAt: fetchedAt}
	version := ""
	if t, ok := updatedAt(provider, top); ok {
		version = strconv.FormatInt(t.UnixMilli(), 10)
		row.occurredAt = t
	} else {
		sum, err := contentHash(user)
		if err != nil {
			return importRow{}, err
		}
		version = sum
	}
	row.eventID = "import:" + version + ":" + id
	return row, nil
}

// updatedAt reads the user's modification time where the provider has one:
// Clerk's millisecond "updated_at", WorkOS's ISO 8601 "updated_at". Stack
// Auth's user has none.
func updatedAt(provider string, user map[string]json.RawMessage) (time.Time, bool) {
	v := user["updated_at"]
	switch provider {
	case outbox.ProviderClerk:
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil || math.IsInf(f, 0) || math.Abs(f) > 1e17 {
			return time.Time{}, false
		}
		return time.UnixMilli(int64(math.Floor(f))).UTC(), true
	case outbox.ProviderWorkOS:
		var s string
		if json.Unmarshal(v, &s) != nil {
			return time.Time{}, false
		}
		return outbox.ParseISO8601(s)
	}
	return time.Time{}, false
}

// contentHash is the first 16 hex digits of the SHA-256 of the object
// re-encoded in a canonical form: object keys sorted, no insignificant
// space, numbers exactly as written, strings in Go's escaping without HTML
// escapes. The same user in the same state always hashes the same, whatever
// order the API lists its members in.
func contentHash(user json.RawMessage) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(user))
	dec.UseNumber() // a float64 would round large integers
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("re-encode the user: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // maps encode with sorted keys
		return "", fmt.Errorf("re-encode the user: %w", err)
	}
	sum := sha256.Sum256(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	return hex.EncodeToString(sum[:8]), nil
}

// hasNULEscape reports whether the JSON text holds the escape \u0000, which
// jsonb refuses: an escape is a backslash preceded by an even number of
// backslashes.
func hasNULEscape(b []byte) bool {
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(`\u0000`))
		if j < 0 {
			return false
		}
		at := i + j
		n := 0
		for k := at - 1; k >= 0 && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return true
		}
		i = at + 1
	}
}

// reconcileEventID is the event id of a deletion that --prune-missing
// emits: the listing's start and the user, so one listing deletes a user once.
func reconcileEventID(listingStart time.Time, userID string) string {
	return "reconcile:" + strconv.FormatInt(listingStart.UnixMilli(), 10) + ":" + userID
}
