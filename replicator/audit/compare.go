package audit

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/usersync/usersync/outbox"
)

// Difference is one way the stored state differs from the pure fold of the
// outbox: a users_sync column or register of one user, or the accounting of
// one outbox row.
type Difference struct {
	// UserID is the user whose row or registers differ; empty for accounting.
	UserID string `json:"user_id,omitempty"`
	// OutboxID is the outbox row whose accounting is wrong; zero otherwise.
	OutboxID int64 `json:"outbox_id,omitempty"`
	// Column is a users_sync column, a users_sync_state register column,
	// "row" or "registers" (present where they should not be, or missing),
	// or "accounting" or "decode" for an outbox row.
	Column string `json:"column"`
	// Want is what the fold says; Got is what is stored. Times are RFC 3339
	// strings, raw_json is JSON, absent values are null.
	Want any `json:"want"`
	Got  any `json:"got"`
}

// userDifferences lists how got differs from want for one user. A nil
// want.Row means the user should be absent: no row and no registers.
func userDifferences(id string, want outbox.State, got userState) []Difference {
	diff := func(col string, w, g any) Difference { return Difference{UserID: id, Column: col, Want: w, Got: g} }
	var out []Difference
	switch {
	case want.Row == nil && got.row != nil:
		out = append(out, diff("row", nil, json.RawMessage(got.row.JSON())))
	case want.Row != nil && got.row == nil:
		out = append(out, diff("row", json.RawMessage(want.Row.JSON()), nil))
	case want.Row != nil:
		out = append(out, rowDifferences(id, want.Row, got.row)...)
	}
	switch {
	case want.Row == nil && got.hasRegisters:
		out = append(out, diff("registers", nil, registersJSON(got.state)))
	case want.Row != nil && !got.hasRegisters:
		out = append(out, diff("registers", registersJSON(want), nil))
	case want.Row != nil:
		if !sameKey(want.Profile, got.state.Profile) {
			out = append(out, diff("profile_outbox_id", keyID(want.Profile), keyID(got.state.Profile)),
				diff("profile_at", keyAt(want.Profile), keyAt(got.state.Profile)))
		}
		if !sameKey(want.Last, got.state.Last) {
			out = append(out, diff("last_outbox_id", keyID(want.Last), keyID(got.state.Last)),
				diff("last_at", keyAt(want.Last), keyAt(got.state.Last)))
		}
	}
	return out
}

// rowDifferences compares two users_sync rows column by column, as
// Postgres sees them: times by instant, raw_json by JSON value.
func rowDifferences(id string, want, got *outbox.Row) []Difference {
	var out []Difference
	for _, col := range outbox.DifferingColumns(want, got) {
		w, g := columnValue(want, col), columnValue(got, col)
		out = append(out, Difference{UserID: id, Column: col, Want: w, Got: g})
	}
	return out
}

// columnValue is column col of r as a difference shows it.
func columnValue(r *outbox.Row, col string) any {
	switch col {
	case "name":
		return r.Name
	case "email":
		return r.Email
	case "created_at":
		return timeValue(r.CreatedAt)
	case "updated_at":
		return timeValue(r.UpdatedAt)
	case "deleted_at":
		return timeValue(r.DeletedAt)
	default:
		return jsonValue(r.RawJSON)
	}
}

func registersJSON(st outbox.State) map[string]any {
	return map[string]any{
		"profile_outbox_id": keyID(st.Profile), "profile_at": keyAt(st.Profile),
		"last_outbox_id": keyID(st.Last), "last_at": keyAt(st.Last),
	}
}

func sameKey(a, b outbox.Key) bool { return a.OutboxID == b.OutboxID && a.At.Equal(b.At) }

func keyID(k outbox.Key) any {
	if k.IsZero() {
		return nil
	}
	return k.OutboxID
}

func keyAt(k outbox.Key) any {
	if k.IsZero() {
		return nil
	}
	return timeValue(&k.At)
}

// timeValue renders a time as users_sync_history does: UTC, microseconds.
func timeValue(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}

func jsonValue(b json.RawMessage) any {
	if len(b) == 0 || !json.Valid(b) {
		return nil
	}
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return nil
	}
	return json.RawMessage(buf.Bytes())
}

func orNull(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	return b
}
