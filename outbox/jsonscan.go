package outbox

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// The adapters read a few members of a user object of a kilobyte or more.
// encoding/json decodes every member into a map, allocating as it goes, and
// was most of the replicator's CPU; the scanner below validates the whole
// text in one pass and hands back each member's value as a slice of the
// input, decoded only when an adapter reads it.
//
// It is a fast path, not a second definition of JSON: whenever it is not
// sure to agree with encoding/json (invalid input, invalid UTF-8 in a key,
// deep nesting) it says so, and the caller asks encoding/json, whose result
// and error messages then stand.

// maxScanDepth is where the scanner gives up and defers to encoding/json,
// which has its own, larger limit.
const maxScanDepth = 1000

// fields are an object's members in order, keys and values as slices of
// the object's text. Lookups scan from the end, so that a later duplicate
// wins, as with encoding/json; an adapter reads a handful of a few dozen
// members, which costs less than building a map of them.
type fields []field

type field struct {
	key   []byte
	value json.RawMessage
}

// at returns the value of member key, nil when there is none.
func (f fields) at(key string) json.RawMessage {
	v, _ := f.get(key)
	return v
}

// get returns the value of member key and whether there is one.
func (f fields) get(key string) (json.RawMessage, bool) {
	for i := len(f) - 1; i >= 0; i-- {
		if string(f[i].key) == key {
			return f[i].value, true
		}
	}
	return nil, false
}

// fieldsOf orders the members decoded by encoding/json.
func fieldsOf(m map[string]json.RawMessage) fields {
	f := make(fields, 0, len(m))
	for k, v := range m {
		f = append(f, field{key: []byte(k), value: v})
	}
	return f
}

// scanObject splits the JSON object b into its members. ok is false when b
// is not a JSON object the scanner is sure about.
func scanObject(b []byte) (f fields, ok bool) {
	s := jsonScanner{b: b}
	s.space()
	if s.i >= len(b) || b[s.i] != '{' {
		return nil, false
	}
	f = make(fields, 0, 48)
	if !s.object(func(key, value []byte) { f = append(f, field{key: key, value: value}) }) {
		return nil, false
	}
	s.space()
	return f, s.i == len(b)
}

// scanArray splits the JSON array b into its elements, each a slice of b.
func scanArray(b []byte) (elems []json.RawMessage, ok bool) {
	s := jsonScanner{b: b}
	s.space()
	if s.i >= len(b) || b[s.i] != '[' {
		return nil, false
	}
	if !s.array(func(elem []byte) { elems = append(elems, elem) }) {
		return nil, false
	}
	s.space()
	return elems, s.i == len(b)
}

type jsonScanner struct {
	b     []byte
	i     int
	depth int
}

func (s *jsonScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value advances past one value, which starts at s.i.
func (s *jsonScanner) value() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(nil)
	case c == '[':
		return s.array(nil)
	case c == '"':
		_, ok := s.str()
		return ok
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return false
}

// object advances past an object, calling member (when non-nil) for each.
func (s *jsonScanner) object(member func(key, value []byte)) bool {
	if s.depth++; s.depth > maxScanDepth {
		return false
	}
	s.i++ // {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return true
	}
	for {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return false
		}
		key, ok := s.key()
		if !ok {
			return false
		}
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		s.space()
		start := s.i
		if !s.value() {
			return false
		}
		if member != nil {
			member(key, s.b[start:s.i:s.i])
		}
		s.space()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
			s.space()
		case '}':
			s.i++
			s.depth--
			return true
		default:
			return false
		}
	}
}

// array advances past an array, calling elem (when non-nil) for each element.
func (s *jsonScanner) array(elem func(value []byte)) bool {
	if s.depth++; s.depth > maxScanDepth {
		return false
	}
	s.i++ // [
	s.space()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		s.depth--
		return true
	}
	for {
		start := s.i
		if !s.value() {
			return false
		}
		if elem != nil {
			elem(s.b[start:s.i:s.i])
		}
		s.space()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
			s.space()
		case ']':
			s.i++
			s.depth--
			return true
		default:
			return false
		}
	}
}

// key reads a member name; one with escapes is decoded by encoding/json,
// and one that is not valid UTF-8 (which encoding/json would repair) makes
// the scanner defer.
func (s *jsonScanner) key() ([]byte, bool) {
	start := s.i
	escaped, ok := s.str()
	if !ok {
		return nil, false
	}
	raw := s.b[start+1 : s.i-1 : s.i-1]
	if !utf8.Valid(raw) {
		return nil, false
	}
	if !escaped {
		return raw, true
	}
	var key string
	if json.Unmarshal(s.b[start:s.i], &key) != nil {
		return nil, false
	}
	return []byte(key), true
}

// plainByte marks the bytes a string may hold as they are: all but the
// quote, the backslash and control characters.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str advances past a string starting at s.i and reports whether it held
// an escape.
func (s *jsonScanner) str() (escaped, ok bool) {
	s.i++ // "
	for s.i < len(s.b) {
		// Most of a string is plain bytes: skip them in a tight loop.
		for s.i < len(s.b) && plainByte[s.b[s.i]] {
			s.i++
		}
		if s.i >= len(s.b) {
			break
		}
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return escaped, true
		case c == '\\':
			escaped = true
			if s.i+1 >= len(s.b) {
				return escaped, false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) || !isHex4(s.b[s.i+2:s.i+6]) {
					return escaped, false
				}
				s.i += 6
			default:
				return escaped, false
			}
		case c < 0x20:
			return escaped, false
		default:
			s.i++
		}
	}
	return escaped, false
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func (s *jsonScanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// number advances past a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *jsonScanner) number() bool {
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.i < len(s.b) && s.b[s.i] >= '1' && s.b[s.i] <= '9':
		s.digits()
	default:
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if !s.digits() {
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// digits advances past one or more digits.
func (s *jsonScanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// objectList decodes a JSON array of objects (or nulls) into their members,
// as json.Unmarshal into []map[string]json.RawMessage does; ok is false
// when v is not such an array.
func objectList(v json.RawMessage) (list []fields, ok bool) {
	if kind(v) != "array" {
		return nil, false
	}
	if elems, fast := scanArray(v); fast {
		list = make([]fields, 0, len(elems))
		for _, e := range elems {
			m, isObject := scanObject(e)
			switch {
			case isObject:
				list = append(list, m)
			case kind(e) == "null":
				list = append(list, nil)
			default:
				fast = false
			}
		}
		if fast {
			return list, true
		}
	}
	var maps []map[string]json.RawMessage
	if json.Unmarshal(v, &maps) != nil {
		return nil, false
	}
	list = make([]fields, len(maps))
	for i, m := range maps {
		if m != nil {
			list[i] = fieldsOf(m)
		}
	}
	return list, true
}

// unquote decodes the JSON string v into s, as json.Unmarshal does; a
// string without escapes and valid as UTF-8 (nearly all) is taken as it is.
func unquote(v json.RawMessage, s *string) bool {
	if n := len(v); n >= 2 && v[0] == '"' && v[n-1] == '"' {
		inner := v[1 : n-1]
		if bytes.IndexByte(inner, '\\') < 0 && bytes.IndexByte(inner, '"') < 0 && !hasControl(inner) && utf8.Valid(inner) {
			*s = string(inner)
			return true
		}
	}
	return json.Unmarshal(v, s) == nil
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}
