package webhook

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/usersync/usersync/outbox"
)

// envelope is the part of a webhook body the receiver reads; the adapters
// read the rest when the replicator folds the row.
type envelope struct {
	Type string
	// ID is the body's own event id (WorkOS); the others carry it in a header.
	ID string
	// Timestamp is the provider's event time, when the body has one: a
	// millisecond epoch number (Clerk, generic) or a time string (generic,
	// WorkOS) that ParseTime reads.
	Timestamp json.RawMessage
	ParseTime timeParser
}

// timeParser reads a time string as an adapter does (outbox.ParseRFC3339,
// outbox.ParseISO8601).
type timeParser func(string) (time.Time, bool)

// envelopeKeys names the members of a provider's webhook body that hold the
// event type, the event time and, when the body carries it, the event id,
// and how its adapter reads a time string.
type envelopeKeys struct {
	typ, time, id string
	parseTime     timeParser
}

func keysOf(provider string) envelopeKeys {
	if provider == outbox.ProviderWorkOS {
		// {id, event, data, created_at}: "created_at" here is the event's
		// time; the user's own is inside "data".
		return envelopeKeys{typ: "event", time: "created_at", id: "id", parseTime: outbox.ParseISO8601}
	}
	return envelopeKeys{typ: "type", time: "timestamp", parseTime: outbox.ParseRFC3339}
}

// parseEnvelope requires a JSON object with a string event type ("type", or
// "event" for WorkOS) and, for WorkOS, a string event "id". Its errors never
// quote the body.
func parseEnvelope(body []byte, provider string) (envelope, error) {
	keys := keysOf(provider)
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return envelope{}, fmt.Errorf("body is not a JSON object")
	}
	var env envelope
	if err := json.Unmarshal(fields[keys.typ], &env.Type); err != nil || env.Type == "" {
		return envelope{}, fmt.Errorf("body has no string %q", keys.typ)
	}
	if keys.id != "" {
		if err := json.Unmarshal(fields[keys.id], &env.ID); err != nil || env.ID == "" {
			return envelope{}, fmt.Errorf("body has no string %q (the event id)", keys.id)
		}
	}
	env.Timestamp, env.ParseTime = fields[keys.time], keys.parseTime
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
		return bodyTime(env.Timestamp, env.ParseTime)
	}
	t, _ := messageTime(id, h.cfg.Now())
	return t
}

// Bounds of timestamptz values the adapters accept.
var (
	minBodyTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxBodyTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// bodyTime reads the envelope's event time as the adapters do: a number of
// milliseconds since the Unix epoch (Clerk, generic) or a time string
// (generic, WorkOS) that parse reads. It returns zero when it is neither.
func bodyTime(raw json.RawMessage, parse timeParser) time.Time {
	var t time.Time
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return time.Time{}
		}
		t, _ = parse(s)
	} else if f, err := strconv.ParseFloat(string(raw), 64); err == nil && math.Abs(f) < 1e17 {
		t = time.UnixMilli(int64(f))
	}
	if t.Before(minBodyTime) || t.After(maxBodyTime) {
		return time.Time{}
	}
	return t.UTC()
}
