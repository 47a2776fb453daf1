package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// samples are the providers' webhook bodies (outbox/testdata/providers),
// parsed, to be varied per event.
type samples map[string]map[string]any // "clerk_user.created" → body

func loadSamples(dir string) (samples, error) {
	s := samples{}
	for _, provider := range []string{"clerk", "stackauth", "workos"} {
		for _, typ := range []string{"user.created", "user.updated", "user.deleted"} {
			name := provider + "_" + typ
			data, err := os.ReadFile(filepath.Join(dir, name+".json"))
			if err != nil {
				return nil, fmt.Errorf("provider samples: %w (run from the repository's root, or pass -samples)", err)
			}
			var body map[string]any
			if err := json.Unmarshal(data, &body); err != nil {
				return nil, fmt.Errorf("provider sample %s: %w", name, err)
			}
			s[name] = body
		}
	}
	return s, nil
}

// clone deep-copies a sample through JSON.
func clone(v map[string]any) map[string]any {
	b, _ := json.Marshal(v)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// newEvent is one outbox row to insert, or one webhook to deliver (Body).
type newEvent struct {
	Provider   string // clerk, stack, workos, generic
	Type       string
	Payload    []byte
	OccurredAt *time.Time // set for stack (its bodies have no event time) and some generic events
	Malformed  bool
}

// eventGen makes realistic events: the providers' sample bodies with a
// user from a fixed pool (so users get many events), names and emails
// that change, event times scattered over a window so that they arrive out
// of order, and now and then a malformed one.
type eventGen struct {
	rng     *rand.Rand
	samples samples
	users   int
	epoch   time.Time
}

var firstNames = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie"}
var lastNames = []string{"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Lamport"}

// eventTime is a time in the soak's window, scattered by up to an hour so
// that a user's events arrive out of order.
func (g *eventGen) eventTime() time.Time {
	return g.epoch.Add(time.Duration(g.rng.Int64N(int64(time.Hour))))
}

func (g *eventGen) eventType() string {
	switch r := g.rng.IntN(100); {
	case r < 30:
		return "user.created"
	case r < 85:
		return "user.updated"
	default:
		return "user.deleted"
	}
}

// next returns a random event of a random provider.
func (g *eventGen) next() newEvent {
	providers := []string{"clerk", "stack", "workos", "generic"}
	return g.forProvider(providers[g.rng.IntN(len(providers))])
}

func (g *eventGen) forProvider(provider string) newEvent {
	n := g.rng.IntN(g.users)
	typ := g.eventType()
	when := g.eventTime()
	ev := newEvent{Provider: provider, Type: typ}
	first, last := firstNames[g.rng.IntN(len(firstNames))], lastNames[g.rng.IntN(len(lastNames))]
	email := fmt.Sprintf("%s.%s.%d@example.com", first, last, g.rng.IntN(100))
	var body map[string]any
	switch provider {
	case "clerk":
		body = clone(g.samples["clerk_"+typ])
		data := body["data"].(map[string]any)
		data["id"] = fmt.Sprintf("user_soak%05d", n)
		body["timestamp"] = when.UnixMilli()
		if typ != "user.deleted" {
			data["first_name"], data["last_name"] = first, last
			data["updated_at"] = when.UnixMilli()
			if addrs, ok := data["email_addresses"].([]any); ok && len(addrs) > 0 {
				addr := addrs[0].(map[string]any)
				addr["email_address"] = email
				data["primary_email_address_id"] = addr["id"]
			}
		}
	case "stack":
		body = clone(g.samples["stackauth_"+typ])
		data := body["data"].(map[string]any)
		data["id"] = fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
		if typ != "user.deleted" {
			data["display_name"] = first + " " + last
			data["primary_email"] = email
		}
		ev.OccurredAt = &when // Stack bodies carry no event time
	case "workos":
		body = clone(g.samples["workos_"+typ])
		body["id"] = fmt.Sprintf("event_soak%016x", g.rng.Uint64())
		body["created_at"] = when.Format(time.RFC3339Nano)
		data := body["data"].(map[string]any)
		data["id"] = fmt.Sprintf("user_01SOAK%016d", n)
		if typ != "user.deleted" {
			data["first_name"], data["last_name"], data["email"] = first, last, email
			data["updated_at"] = when.Format(time.RFC3339Nano)
		}
	default:
		body = map[string]any{"id": fmt.Sprintf("g%05d", n)}
		if typ != "user.deleted" {
			body["name"], body["email"] = first+" "+last, email
		}
		if g.rng.IntN(2) == 0 {
			body["updated_at"] = when.Format(time.RFC3339Nano)
		} else {
			ev.OccurredAt = &when
		}
	}
	if g.rng.IntN(50) == 0 { // about 2% malformed
		ev.Malformed = true
		target := body
		if d, ok := body["data"].(map[string]any); ok {
			target = d
		}
		switch g.rng.IntN(3) {
		case 0:
			delete(target, "id")
		case 1:
			target["id"] = 42
		default:
			ev.Payload = []byte(`["not", "an", "object"]`)
			return ev
		}
	}
	ev.Payload, _ = json.Marshal(body)
	return ev
}
