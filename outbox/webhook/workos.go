package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// WorkOSTolerance is how far a WorkOS-Signature timestamp may be from the
// receiver's clock, either way: the 3 minutes WorkOS's SDKs accept.
const WorkOSTolerance = 3 * time.Minute

// Errors returned by WorkOSVerifier.Verify, besides ErrStaleTimestamp,
// ErrTooManySignatures and ErrNoMatch; all of them mean 401.
var (
	ErrMissingWorkOSSignature   = errors.New("missing WorkOS-Signature header")
	ErrMalformedWorkOSSignature = errors.New(`WorkOS-Signature is not "t=<milliseconds>, v1=<hex HMAC-SHA256>"`)
)

// ParseWorkOSSecrets splits a space-separated list of WorkOS webhook
// secrets. WorkOS's SDKs key the HMAC with the secret exactly as the
// dashboard shows it, so each is used as is: no base64 decoding, and a
// whsec_ prefix, if any, is part of the key.
func ParseWorkOSSecrets(list string) ([][]byte, error) {
	fields := strings.Fields(list)
	if len(fields) == 0 {
		return nil, errors.New("no secret")
	}
	keys := make([][]byte, len(fields))
	for i, f := range fields {
		keys[i] = []byte(f)
	}
	return keys, nil
}

// WorkOSVerifier checks WorkOS-Signature headers, "t=<ms>, v1=<hex>": an
// HMAC-SHA256, keyed with each secret in turn, of "<t>.<raw body>".
type WorkOSVerifier struct {
	keys [][]byte
	now  func() time.Time
}

var _ verifier = (*WorkOSVerifier)(nil)

// NewWorkOSVerifier returns a WorkOSVerifier for the keys (see
// ParseWorkOSSecrets); now nil means time.Now.
func NewWorkOSVerifier(keys [][]byte, now func() time.Time) *WorkOSVerifier {
	if now == nil {
		now = time.Now
	}
	return &WorkOSVerifier{keys: keys, now: now}
}

// Verify checks the delivery's WorkOS-Signature header against body. The
// event id is in the body, not the headers.
func (v *WorkOSVerifier) Verify(h http.Header, body []byte) error {
	sig, err := v.parse(h)
	if err != nil {
		return err
	}
	return v.check(sig, body)
}

// parse reads the WorkOS-Signature header once, refusing from it alone a
// missing or malformed header, a timestamp out of tolerance and too many
// signatures.
func (v *WorkOSVerifier) parse(h http.Header) (signature, error) {
	value := h.Get("WorkOS-Signature")
	if value == "" {
		return signature{}, ErrMissingWorkOSSignature
	}
	var ts string
	var macs [][]byte
	n := 0
	for part := range strings.SplitSeq(value, ",") {
		if n++; n > maxSignatures+1 {
			return signature{}, ErrTooManySignatures
		}
		key, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch key {
		case "t":
			ts = val
		case "v1":
			if mac, err := hex.DecodeString(val); err == nil && len(mac) == sha256.Size {
				macs = append(macs, mac)
			}
		}
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return signature{}, ErrMalformedWorkOSSignature
	}
	if d := v.now().Sub(time.UnixMilli(ms)); d > WorkOSTolerance || d < -WorkOSTolerance {
		return signature{}, ErrStaleTimestamp
	}
	if len(macs) == 0 {
		return signature{}, ErrNoMatch
	}
	return signature{signed: []byte(ts + "."), macs: macs}, nil
}

func (v *WorkOSVerifier) check(sig signature, body []byte) error {
	return sig.check(v.keys, body)
}

// SignWorkOS returns the WorkOS-Signature header value for a delivery at
// ts, as WorkOS computes it; tests use it.
func SignWorkOS(key []byte, ts time.Time, body []byte) string {
	t := strconv.FormatInt(ts.UnixMilli(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(t + "."))
	mac.Write(body)
	return "t=" + t + ", v1=" + hex.EncodeToString(mac.Sum(nil))
}
