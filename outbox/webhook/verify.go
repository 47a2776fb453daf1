package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultTolerance is how far a signature's timestamp may be from the
// receiver's clock, either way, before the delivery is refused as a replay.
const DefaultTolerance = 5 * time.Minute

// maxSignatures bounds the entries of a signature header. Svix sends one
// per active secret (two during a rotation); more is an attempt to make the
// receiver spend CPU on comparisons.
const maxSignatures = 8

// Errors returned by Verifier.Verify; all of them mean 401.
var (
	ErrMissingHeaders    = errors.New("missing signature headers: want svix-id, svix-timestamp and svix-signature (or webhook-id, webhook-timestamp and webhook-signature)")
	ErrInvalidTimestamp  = errors.New("signature timestamp is not a number of seconds")
	ErrStaleTimestamp    = errors.New("signature timestamp is outside the tolerance")
	ErrTooManySignatures = fmt.Errorf("signature header has more than %d entries", maxSignatures)
	ErrNoMatch           = errors.New("no signature matches")
)

// ParseSecrets decodes a space-separated list of signing secrets, each the
// base64 key optionally prefixed with whsec_ (as Svix and Standard Webhooks
// print them). Several secrets let one be rotated without downtime. Errors
// say which secret of the list is wrong, never its value.
func ParseSecrets(list string) ([][]byte, error) {
	fields := strings.Fields(list)
	if len(fields) == 0 {
		return nil, errors.New("no secret")
	}
	keys := make([][]byte, 0, len(fields))
	for i, f := range fields {
		key, err := decodeSecret(strings.TrimPrefix(f, "whsec_"))
		if err != nil {
			return nil, fmt.Errorf("secret %d of %d is not base64 after whsec_", i+1, len(fields))
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// decodeSecret accepts padded and unpadded base64, since secrets get copied
// by hand and a dropped '=' should not cost an outage.
func decodeSecret(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err == nil && len(key) == 0 {
		err = errors.New("empty key")
	}
	return key, err
}

// verifier is a provider's signature scheme, split in two so that the
// handler can refuse from the headers alone before it reads a body.
type verifier interface {
	// parse reads the signature headers, refusing what they alone condemn.
	parse(h http.Header) (signature, error)
	// check verifies the parsed signature over body.
	check(sig signature, body []byte) error
}

var _ verifier = (*Verifier)(nil)

// Verifier checks Svix / Standard Webhooks signatures: HMAC-SHA256, keyed with
// each secret in turn, over "id.timestamp.body", compared in constant time
// with every "v1,<base64>" entry of the signature header.
type Verifier struct {
	keys      [][]byte
	tolerance time.Duration
	now       func() time.Time
}

// NewVerifier returns a Verifier for the decoded keys (see ParseSecrets).
// tolerance 0 means DefaultTolerance; now nil means time.Now.
func NewVerifier(keys [][]byte, tolerance time.Duration, now func() time.Time) *Verifier {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	if now == nil {
		now = time.Now
	}
	return &Verifier{keys: keys, tolerance: tolerance, now: now}
}

// Verify checks the delivery's signature headers against body and returns
// the message id, which is stable across redeliveries of one message.
func (v *Verifier) Verify(h http.Header, body []byte) (string, error) {
	sig, err := v.parse(h)
	if err != nil {
		return "", err
	}
	if err := v.check(sig, body); err != nil {
		return "", err
	}
	return sig.id, nil
}

func (v *Verifier) check(sig signature, body []byte) error {
	return sig.check(v.keys, body)
}

// parse reads the signature headers once, refusing from them alone what
// can be refused before a body is read: a missing header, a timestamp out
// of tolerance, too many entries, or no v1 entry at all.
func (v *Verifier) parse(h http.Header) (signature, error) {
	id, ts, sigs := header(h, "id"), header(h, "timestamp"), header(h, "signature")
	if id == "" || ts == "" || sigs == "" {
		return signature{}, ErrMissingHeaders
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return signature{}, ErrInvalidTimestamp
	}
	// Refuse both old and future timestamps: either could be a replay of a
	// captured delivery, and an honest sender's clock is close to ours.
	if d := v.now().Sub(time.Unix(secs, 0)); d > v.tolerance || d < -v.tolerance {
		return signature{}, ErrStaleTimestamp
	}
	macs, err := svixMACs(sigs)
	if err != nil {
		return signature{}, err
	}
	return signature{id: id, signed: []byte(id + "." + ts + "."), macs: macs}, nil
}

// svixMACs decodes the v1 entries of a space-separated signature header.
// Other versions (v1a is asymmetric) and entries that are not base64 of a
// SHA-256 MAC are skipped, but count towards maxSignatures.
func svixMACs(header string) ([][]byte, error) {
	var macs [][]byte
	n := 0
	for entry := range strings.FieldsSeq(header) {
		if n++; n > maxSignatures {
			return nil, ErrTooManySignatures
		}
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		mac, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && len(mac) == sha256.Size {
			macs = append(macs, mac)
		}
	}
	if len(macs) == 0 {
		return nil, ErrNoMatch
	}
	return macs, nil
}

// header reads svix-<name>, else webhook-<name>: Svix and Standard Webhooks
// name the same three headers differently.
func header(h http.Header, name string) string {
	if v := h.Get("svix-" + name); v != "" {
		return v
	}
	return h.Get("webhook-" + name)
}

// signature is a delivery's signature headers, parsed once.
type signature struct {
	// id is the delivery's message id when the headers carry one (Svix;
	// WorkOS puts the event id in the body).
	id string
	// signed is what the sender's MAC covers before the body.
	signed []byte
	// macs are the decoded signatures, any of which may match.
	macs [][]byte
}

// check computes the MAC of the signed content once per key and compares
// it in constant time with every signature.
func (s signature) check(keys [][]byte, body []byte) error {
	for _, key := range keys {
		mac := hmac.New(sha256.New, key)
		mac.Write(s.signed)
		mac.Write(body)
		want := mac.Sum(nil)
		for _, got := range s.macs {
			if hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return ErrNoMatch
}

// Sign returns the svix-signature header value for a delivery, as a Svix
// sender would compute it; tests and senders of generic events use it.
func Sign(key []byte, id string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(ts.Unix(), 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
