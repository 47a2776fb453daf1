package outbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Decode validates one outbox record and maps its payload, through the
// provider's adapter, to an Event ready to fold. A record that can never be
// folded yields a *RejectError whose reason belongs in outbox_rejects; Decode
// returns no other error and never panics, whatever the record holds.
//
// Every time it produces is UTC and truncated to microseconds, so an Event
// compares equal to itself after a trip through Postgres. The event's
// Object is a slice of r.Payload, not a copy: the caller must not reuse the
// payload's memory while the event is in use.
func Decode(r Record) (Event, error) {
	if err := checkNames(r); err != nil {
		return Event{}, err
	}
	d, err := newDecoder(r)
	if err != nil {
		return Event{}, err
	}
	id, err := d.userID()
	if err != nil {
		return Event{}, err
	}
	a := adapters[r.Provider]
	// The provider's time is read, and so validated, even when the outbox
	// row has occurred_at: whether a payload is acceptable should not depend
	// on which inserter wrote the row.
	at, err := a.eventTime(d)
	if err != nil {
		return Event{}, err
	}
	when, err := occurredAt(r, at)
	if err != nil {
		return Event{}, err
	}
	ev := Event{
		OutboxID:   r.ID,
		Provider:   r.Provider,
		Type:       r.EventType,
		EventID:    r.EventID,
		UserID:     id,
		OccurredAt: when,
		Object:     d.object,
		Enveloped:  d.env != nil,
	}
	if r.EventType == TypeDeleted {
		return ev, nil
	}
	if ev.Profile, err = a.profile(d); err != nil {
		return Event{}, err
	}
	if ev.Profile.UpdatedAt == nil {
		at := ev.OccurredAt
		ev.Profile.UpdatedAt = &at
	}
	return ev, nil
}

// checkNames validates the provider and event type, which the reasons of
// every later reject quote unescaped.
func checkNames(r Record) error {
	if !knownProvider(r.Provider) {
		return &RejectError{Reason: fmt.Sprintf("unknown provider %s: expected clerk, stack, workos or generic", quote(r.Provider))}
	}
	switch r.EventType {
	case TypeCreated, TypeUpdated, TypeDeleted:
	default:
		return &RejectError{Reason: fmt.Sprintf("event_type %s is not one of user.created, user.updated, user.deleted", quote(r.EventType))}
	}
	return nil
}

// occurredAt picks the event's effective time: the outbox column, else the
// provider's own time, else when the row was received. Like every time the
// fold keeps, it must lie in the years 1 to 9999: the columns accept years
// BC, which the history images (and RFC 3339) cannot hold.
func occurredAt(r Record, provider *time.Time) (time.Time, error) {
	column, t := "occurred_at", r.ReceivedAt
	switch {
	case r.OccurredAt != nil:
		t = *r.OccurredAt
	case provider != nil:
		return *provider, nil
	default:
		column = "received_at"
	}
	kept, complaint := inRange(t)
	if complaint != "" {
		return time.Time{}, &RejectError{Reason: fmt.Sprintf("outbox %s %s is %s: set it to the event's time",
			column, t.UTC().Format("2006-01-02T15:04:05Z07:00"), strings.TrimPrefix(complaint, "which is "))}
	}
	return kept, nil
}

// decoder holds one record's payload, split into the optional webhook
// envelope and the user object, for the adapters to read.
type decoder struct {
	rec Record
	// env is the webhook body around the user object; nil for a bare object.
	env *members
	// user is the user object.
	user members
	// object is the user object's bytes, which become raw_json.
	object json.RawMessage
}

// newDecoder parses the payload and unwraps a webhook envelope: a top level
// with an object "data" and either no "id" of its own (a user object has an
// id) or a string event type naming a user event (a generic sender's
// envelope, and every WorkOS event, carries its own event id).
func newDecoder(r Record) (*decoder, error) {
	d := &decoder{rec: r}
	top, err := d.parseObject(r.Payload)
	if err != nil {
		return nil, err
	}
	data := top.at("data")
	if !isEnvelope(top, envelopeTypeKey(r.Provider)) {
		d.user = members{m: top, loc: "at the top level"}
		d.object = bytes.TrimSpace(r.Payload)
		return d, nil
	}
	d.env = &members{m: top, loc: "at the top level"}
	if err := d.checkEnvelopeType(); err != nil {
		return nil, err
	}
	user, err := d.parseObject(data)
	if err != nil {
		return nil, err
	}
	d.user = members{m: user, loc: `in "data"`}
	d.object = data
	return d, nil
}

// envelopeTypeKey names the envelope member holding the event type: WorkOS
// calls it "event" ({id, event, data, created_at}); Svix senders (Clerk,
// Stack Auth) and generic bodies call it "type".
func envelopeTypeKey(provider string) string {
	if provider == ProviderWorkOS {
		return "event"
	}
	return "type"
}

func isEnvelope(top fields, typeKey string) bool {
	if kind(top.at("data")) != "object" {
		return false
	}
	if _, hasID := top.get("id"); !hasID {
		return true
	}
	var typ string
	return kind(top.at(typeKey)) == "string" && unquote(top.at(typeKey), &typ) && strings.HasPrefix(typ, "user.")
}

// parseObject splits a JSON object into its raw members, which may be
// slices of b.
func (d *decoder) parseObject(b []byte) (fields, error) {
	if fast, ok := scanObject(b); ok {
		return fast, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) && strings.Contains(syntax.Error(), "max depth") {
			// Valid JSON, and jsonb holds it, but deeper than encoding/json reads.
			return nil, d.reject("payload nests arrays or objects more than 10000 levels deep, more than this replicator reads: flatten it")
		}
		if !json.Valid(b) {
			return nil, d.reject("payload is not valid JSON: %s", err)
		}
		return nil, d.reject("payload is a JSON %s, want an object (a user or a webhook body)", kind(bytes.TrimSpace(b)))
	}
	if m == nil { // the JSON null decodes into a nil map without error
		return nil, d.reject("payload is JSON null, want an object (a user or a webhook body)")
	}
	return fieldsOf(m), nil
}

// checkEnvelopeType rejects a webhook body whose event type ("type", or
// "event" for WorkOS) names another event than the outbox row: one of the
// two is wrong, and folding could lose data.
func (d *decoder) checkEnvelopeType() error {
	key := envelopeTypeKey(d.rec.Provider)
	v := d.env.m.at(key)
	var s string
	if kind(v) != "string" || !unquote(v, &s) || s == d.rec.EventType {
		return nil
	}
	return d.reject(`payload %q is %s but the outbox event_type is %q: the webhook body and the row disagree`, key, quote(s), d.rec.EventType)
}

// MaxUserIDBytes bounds a user id: users_sync's primary key index cannot
// hold arbitrarily long keys, and a row the database refuses must become a
// reject here rather than a failed apply.
const MaxUserIDBytes = 1024

// userID reads the user's id, which every event must carry to be folded.
func (d *decoder) userID() (string, error) {
	v, ok := d.user.m.get("id")
	if !ok {
		verb := strings.TrimPrefix(d.rec.EventType, "user.")
		return "", d.reject(`payload has no "id" %s: cannot tell which user was %s`, d.user.loc, verb)
	}
	var s string
	if kind(v) != "string" || !unquote(v, &s) || s == "" {
		return "", d.badField(d.user, "id", v, "want a non-empty string")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "", d.hasNUL(d.user, "id")
	}
	if len(s) > MaxUserIDBytes {
		return "", d.reject(`"id" %s is %d bytes long; user ids longer than %d bytes are not accepted (no provider issues them)`, d.user.loc, len(s), MaxUserIDBytes)
	}
	return s, nil
}

// reject makes a RejectError about this record; the reason starts with the
// provider and event type so that it reads on its own.
func (d *decoder) reject(format string, args ...any) error {
	return &RejectError{Reason: d.rec.Provider + " " + d.rec.EventType + " " + fmt.Sprintf(format, args...)}
}

// badField rejects member key of o, whose value v is not what the mapping needs.
func (d *decoder) badField(o members, key string, v json.RawMessage, want string) error {
	return d.reject("%q %s is %s, %s", key, o.loc, show(v), want)
}

// hasNUL rejects a string Postgres text cannot store. jsonb refuses \u0000
// too, so only a record built outside the database can carry one.
func (d *decoder) hasNUL(o members, key string) error {
	return d.reject(`%q %s contains \u0000, which Postgres text cannot store`, key, o.loc)
}

// str reads an optional string member: absent and null give nil.
func (d *decoder) str(o members, key string) (*string, error) {
	v := o.m.at(key)
	switch kind(v) {
	case "absent", "null":
		return nil, nil
	case "string":
		var s string
		if unquote(v, &s) {
			if strings.IndexByte(s, 0) >= 0 {
				return nil, d.hasNUL(o, key)
			}
			return &s, nil
		}
	}
	return nil, d.badField(o, key, v, "want a string or null")
}

// millis reads an optional millisecond-epoch member: absent and null give nil.
func (d *decoder) millis(o members, key string) (*time.Time, error) {
	v := o.m.at(key)
	if k := kind(v); k == "absent" || k == "null" {
		return nil, nil
	}
	t, complaint := parseMillis(v)
	if complaint != "" {
		return nil, d.badField(o, key, v, complaint)
	}
	return &t, nil
}

// isoTime reads an optional member holding an ISO 8601 time string: absent
// and null give nil.
func (d *decoder) isoTime(o members, key string) (*time.Time, error) {
	v := o.m.at(key)
	if k := kind(v); k == "absent" || k == "null" {
		return nil, nil
	}
	t, complaint := parseISO8601(v)
	if complaint != "" {
		return nil, d.badField(o, key, v, complaint)
	}
	return &t, nil
}

// anyTime reads an optional member holding an RFC 3339 string or a
// millisecond-epoch number: absent and null give nil.
func (d *decoder) anyTime(o members, key string) (*time.Time, error) {
	v := o.m.at(key)
	var t time.Time
	var complaint string
	switch kind(v) {
	case "absent", "null":
		return nil, nil
	case "string":
		t, complaint = parseRFC3339(v)
	case "number":
		t, complaint = parseMillis(v)
	default:
		complaint = "want an RFC 3339 time or a millisecond epoch number"
	}
	if complaint != "" {
		return nil, d.badField(o, key, v, complaint)
	}
	return &t, nil
}
