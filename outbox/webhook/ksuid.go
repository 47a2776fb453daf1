package webhook

import (
	"math/big"
	"strings"
	"time"
)

// ksuidEpoch is the KSUID epoch: its 32-bit timestamp counts seconds from
// 2014-05-13T16:53:20Z (Unix 1400000000).
const ksuidEpoch = 1400000000

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// maxKSUID is 2^160: a KSUID is 20 bytes, so a 27-digit base62 string that
// decodes to more than that is not one.
var maxKSUID = new(big.Int).Lsh(big.NewInt(1), 160)

// messageTime returns the creation time encoded in a Svix message id
// ("msg_" followed by a 27-character base62 KSUID), when it is one and the
// time is plausible: not after now plus a day. Svix creates the id when the
// message is created, so unlike the svix-timestamp header (the time of the
// delivery attempt) it does not move forward when an old message is retried.
func messageTime(id string, now time.Time) (time.Time, bool) {
	raw, ok := strings.CutPrefix(id, "msg_")
	if !ok || len(raw) != 27 {
		return time.Time{}, false
	}
	n := new(big.Int)
	for _, c := range []byte(raw) {
		d := strings.IndexByte(base62, c)
		if d < 0 {
			return time.Time{}, false
		}
		n.Mul(n, big.NewInt(62))
		n.Add(n, big.NewInt(int64(d)))
	}
	if n.Cmp(maxKSUID) >= 0 {
		return time.Time{}, false
	}
	// The timestamp is the first 4 of the 20 big-endian bytes.
	secs := new(big.Int).Rsh(n, 128).Int64()
	t := time.Unix(ksuidEpoch+secs, 0).UTC()
	if t.After(now.Add(24 * time.Hour)) {
		return time.Time{}, false
	}
	return t, true
}
