package webhook

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"
)

// envelope is the part of a webhook body the receiver reads; the adapters
// read the rest when the replicator folds the row.
type envelope struct {
	Type string
	// Timestamp is the provider's event time, when the body has one: a
	// millisecond epoch number (Clerk, generic) or an RFC 3339 string (generic).
	Timestamp json.RawMessage
}

// parseEnvelope requires a JSON object with a string "type". Its errors never
// quote the body.
func parseEnvelope(body []byte) (envelope, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return envelope{}, errors.New("body is not a JSON object")
	}
	var env envelope
	if err := json.Unmarshal(fields["type"], &env.Type); err != nil || env.Type == "" {
		return envelope{}, errors.New(`body has no string "type"`)
	}
	env.Timestamp = fields["timestamp"]
	return env, nil
}

// occurredAt is the body's own event time when it has one, else the creation
// time encoded in the message id, else zero (NULL). Never the signature
// timestamp: that is the time of this delivery attempt, and a retried old
// event would then sort after newer ones.
func (h *Handler) occurredAt(env envelope, id string) time.Time {
	if len(env.Timestamp) > 0 && string(env.Timestamp) != "null" {
		// A body time that does not parse is left to the adapter, which
		// rejects the event saying why, rather than replaced by another time.
		return bodyTime(env.Timestamp)
	}
	t, _ := messageTime(id, h.cfg.Now())
	return t
}

// Bounds of timestamptz values the adapters accept.
var (
	minBodyTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxBodyTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// bodyTime reads the envelope's "timestamp" as the adapters do: a number of
// milliseconds since the Unix epoch (Clerk, generic) or an RFC 3339 string
// (generic). It returns zero when it is neither.
func bodyTime(raw json.RawMessage) time.Time {
	var t time.Time
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return time.Time{}
		}
		t, _ = time.Parse(time.RFC3339Nano, s)
	} else if f, err := strconv.ParseFloat(string(raw), 64); err == nil && math.Abs(f) < 1e17 {
		t = time.UnixMilli(int64(f))
	}
	if t.Before(minBodyTime) || t.After(maxBodyTime) {
		return time.Time{}
	}
	return t.UTC()
}
