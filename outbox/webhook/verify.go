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

// Errors returned by Verifier.Verify; all of them mean 401.
var (
	ErrMissingHeaders   = errors.New("missing signature headers: want svix-id, svix-timestamp and svix-signature (or webhook-id, webhook-timestamp and webhook-signature)")
	ErrInvalidTimestamp = errors.New("signature timestamp is not a number of seconds")
	ErrStaleTimestamp   = errors.New("signature timestamp is outside the tolerance")
	ErrNoMatch          = errors.New("no signature matches")
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
	id, ts, sigs := header(h, "id"), header(h, "timestamp"), header(h, "signature")
	if id == "" || ts == "" || sigs == "" {
		return "", ErrMissingHeaders
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", ErrInvalidTimestamp
	}
	// Refuse both old and future timestamps: either could be a replay of a
	// captured delivery, and an honest sender's clock is close to ours.
	if d := v.now().Sub(time.Unix(secs, 0)); d > v.tolerance || d < -v.tolerance {
		return "", ErrStaleTimestamp
	}
	for _, key := range v.keys {
		if matchAny(sign(key, id, ts, body), sigs) {
			return id, nil
		}
	}
	return "", ErrNoMatch
}

// header reads svix-<name>, else webhook-<name>: Svix and Standard Webhooks
// name the same three headers differently.
func header(h http.Header, name string) string {
	if v := h.Get("svix-" + name); v != "" {
		return v
	}
	return h.Get("webhook-" + name)
}

func sign(key []byte, id, ts string, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// matchAny reports whether any v1 entry of the space-separated signature
// header equals want. Other versions (v1a is asymmetric) are skipped.
func matchAny(want []byte, header string) bool {
	for _, entry := range strings.Fields(header) {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// Sign returns the svix-signature header value for a delivery, as a Svix
// sender would compute it; tests and senders of generic events use it.
func Sign(key []byte, id string, ts time.Time, body []byte) string {
	mac := sign(key, id, strconv.FormatInt(ts.Unix(), 10), body)
	return "v1," + base64.StdEncoding.EncodeToString(mac)
}
