package outbox

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// members is one decoded JSON object whose member values stay raw until an
// adapter reads them, so that each value is type-checked where it is used and
// the payload is not decoded again into typed structs.
type members struct {
	m fields
	// loc says where the object sits, for reject reasons: `in "data"`.
	loc string
}

// kind names the JSON type of a raw value. Values taken from a decoded object
// are valid JSON with no leading space, so the first byte decides.
func kind(v json.RawMessage) string {
	if len(v) == 0 {
		return "absent"
	}
	switch v[0] {
	case 'n':
		return "null"
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	default:
		return "number"
	}
}

// Postgres and RFC 3339 (history's before/after JSON) both hold years 1 to
// 9999; a time outside them would fail later, in the apply transaction, where
// it would block the stream instead of becoming a reject.
var (
	minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
)

// pgTime converts t to what a timestamptz round trip gives back: UTC, whole
// microseconds (pgx truncates, rather than rounds, when it encodes), no
// monotonic reading. Equal keys and rows must compare equal after a reload.
func pgTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// parseMillis reads a JSON number as a millisecond Unix epoch. Fractions and
// exponents are accepted, since some encoders write every number as a float.
func parseMillis(v json.RawMessage) (time.Time, string) {
	if kind(v) != "number" {
		return time.Time{}, "want a millisecond epoch number"
	}
	s := string(v)
	var t time.Time
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		t = time.UnixMilli(ms)
	} else {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < -1e17 || f > 1e17 {
			return time.Time{}, "which is outside the years 1 to 9999"
		}
		sec := math.Floor(f / 1000)
		t = time.Unix(int64(sec), int64(math.Round((f-sec*1000)*1e6)))
	}
	return inRange(t)
}

// parseRFC3339 reads a JSON string holding an RFC 3339 time.
func parseRFC3339(v json.RawMessage) (time.Time, string) {
	var s string
	if kind(v) != "string" || !unquote(v, &s) {
		return time.Time{}, "want an RFC 3339 time"
	}
	t, ok := ParseRFC3339(s)
	if !ok {
		return time.Time{}, "want an RFC 3339 time such as 2024-05-01T12:00:00Z (years 1 to 9999)"
	}
	return t, ""
}

// ParseRFC3339 reads an RFC 3339 time the way the generic adapter does,
// with what Go's time.RFC3339 leaves out: a lower-case "t" or "z" (RFC 3339
// §5.6) and a leap second, read as the next second as PostgreSQL reads it.
// The result is UTC, truncated to microseconds; ok is false for anything
// else or a year outside 1 to 9999.
func ParseRFC3339(s string) (t time.Time, ok bool) {
	return parseTimeLayouts(s, []string{time.RFC3339Nano})
}

// parseTimeLayouts reads s in the first of layouts that fits (a layout
// without a zone reads UTC), after normalizing it as ParseRFC3339 says.
func parseTimeLayouts(s string, layouts []string) (time.Time, bool) {
	s = strings.ToUpper(s) // only "T" and "Z" are letters in these layouts
	leap := len(s) >= 19 && s[17:19] == "60"
	if leap {
		s = s[:17] + "59" + s[19:]
	}
	for _, layout := range layouts {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			if leap {
				t = t.Add(time.Second)
			}
			t, complaint := inRange(t)
			return t, complaint == ""
		}
	}
	return time.Time{}, false
}

// isoLayouts are the ISO 8601 forms WorkOS times take: RFC 3339, and the
// same with a space for the "T" and no zone (read as UTC), which the example
// event of WorkOS's Events API documentation shows ("2023-04-28 20:05:31.093").
var isoLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
}

// parseISO8601 reads a JSON string holding an ISO 8601 date and time.
func parseISO8601(v json.RawMessage) (time.Time, string) {
	var s string
	if kind(v) != "string" || !unquote(v, &s) {
		return time.Time{}, "want an ISO 8601 time string"
	}
	if t, ok := ParseISO8601(s); ok {
		return t, ""
	}
	return time.Time{}, "want an ISO 8601 time such as 2024-05-01T12:00:00.000Z (years 1 to 9999)"
}

// ParseISO8601 reads a time the way the WorkOS adapter does: RFC 3339 (as
// ParseRFC3339 reads it), or the same with a space for the "T" and no zone
// (UTC). The result is UTC,
// truncated to microseconds; ok is false for anything else or a year outside
// 1 to 9999.
func ParseISO8601(s string) (t time.Time, ok bool) {
	return parseTimeLayouts(s, isoLayouts)
}

// inRange returns t as Postgres will store it, or a complaint.
func inRange(t time.Time) (time.Time, string) {
	if t.Before(minTime) || t.After(maxTime) {
		return time.Time{}, "which is outside the years 1 to 9999"
	}
	return pgTime(t), ""
}

// show renders a raw value for a reject reason: bounded in length and valid
// UTF-8, because the reason is stored in a text column.
func show(v json.RawMessage) string {
	const limit = 60
	s := string(v)
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strings.ToValidUTF8(s, string(utf8.RuneError))
}

// quote renders an arbitrary string for a reject reason, bounded in length;
// %q escapes control and invalid bytes, so the result is storable text.
func quote(s string) string {
	const limit = 60
	if len(s) > limit {
		return fmt.Sprintf("%q...", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}
