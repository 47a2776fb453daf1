package outbox

import (
	"bytes"
	"encoding/json"
	"reflect"
	"time"
)

// rowTimeLayout is RFC 3339 with exactly the microseconds Postgres keeps.
const rowTimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// rowJSON is the shape of a users_sync row in history's before/after columns.
type rowJSON struct {
	ID        string          `json:"id"`
	Name      *string         `json:"name"`
	Email     *string         `json:"email"`
	CreatedAt *string         `json:"created_at"`
	UpdatedAt *string         `json:"updated_at"`
	DeletedAt *string         `json:"deleted_at"`
	RawJSON   json.RawMessage `json:"raw_json"`
}

// JSON renders the row as a JSON object with the users_sync columns as keys,
// times in UTC RFC 3339 with microseconds and raw_json embedded, for
// users_sync_history.before and .after. A nil row gives nil (SQL null).
// json.Unmarshal into a Row reads the result back.
func (r *Row) JSON() []byte {
	if r == nil {
		return nil
	}
	raw := r.RawJSON
	switch {
	case len(raw) == 0:
		raw = json.RawMessage("null")
	case !json.Valid(raw):
		// Not reachable from Decode; keep the text rather than fail the audit.
		raw, _ = json.Marshal(string(raw))
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep names like "A & B" readable in SQL
	err := enc.Encode(rowJSON{
		ID: r.ID, Name: r.Name, Email: r.Email,
		CreatedAt: formatTime(r.CreatedAt),
		UpdatedAt: formatTime(r.UpdatedAt),
		DeletedAt: formatTime(r.DeletedAt),
		RawJSON:   raw,
	})
	if err != nil { // unreachable: every value above is encodable
		return nil
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// formatTime renders t without failing, unlike time.MarshalJSON, for any year.
func formatTime(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := t.UTC().Format(rowTimeLayout)
	return &s
}

// RowsEqual reports whether two rows hold the same data as Postgres sees it:
// times by instant, raw_json by JSON value (key order and spacing aside, as
// jsonb normalizes both). Two nil rows are equal.
func RowsEqual(a, b *Row) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ID == b.ID && len(DifferingColumns(a, b)) == 0
}

// DifferingColumns lists the users_sync columns other than id in which two
// rows differ, compared as in RowsEqual.
func DifferingColumns(a, b *Row) []string {
	var cols []string
	for _, c := range []struct {
		name string
		same bool
	}{
		{"name", equalString(a.Name, b.Name)},
		{"email", equalString(a.Email, b.Email)},
		{"created_at", equalTime(a.CreatedAt, b.CreatedAt)},
		{"updated_at", equalTime(a.UpdatedAt, b.UpdatedAt)},
		{"deleted_at", equalTime(a.DeletedAt, b.DeletedAt)},
		{"raw_json", SameJSON(a.RawJSON, b.RawJSON)},
	} {
		if !c.same {
			cols = append(cols, c.name)
		}
	}
	return cols
}

func equalString(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func equalTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// SameJSON compares two JSON texts by value, as jsonb does; an empty text
// counts as null. Text that does not parse is compared byte for byte.
func SameJSON(a, b json.RawMessage) bool {
	var va, vb any
	errA := json.Unmarshal(orNull(a), &va)
	errB := json.Unmarshal(orNull(b), &vb)
	if errA != nil || errB != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(va, vb)
}

func orNull(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	return b
}
