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

// Plausible creation times of a provider's message: Svix ids minted before
// earliestMessage are not KSUIDs of ours (or use a layout we do not read),
// and none is minted after the delivery that carries it.
var earliestMessage = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// messageTime returns the creation time encoded in a Svix message id
// ("msg_" followed by a 27-character base62 KSUID), when it is one and the
// time is plausible: from 2020 to a few minutes after now. Svix creates the id
// when the message is created, so unlike the svix-timestamp header (the time
// of the delivery attempt) it does not move forward when an old message is
// retried.
func messageTime(id string, now time.Time) (time.Time, bool) {
	raw, ok := strings.CutPrefix(id, "msg_")
	if !ok {
		return time.Time{}, false
	}
	t, ok := ksuidTime(raw)
	if !ok || t.Before(earliestMessage) || t.After(now.Add(DefaultTolerance)) {
		return time.Time{}, false
	}
	return t, true
}

// ksuidTime decodes the time of a 27-character base62 KSUID: 4 bytes of
// seconds since the KSUID epoch, then, in Svix's millisecond KSUIDs
// (svix-ksuid's KsuidMs), a fifth byte counting 4 ms units (0-249). Two
// events of one second keep their order through the millisecond part, which
// the fold's (occurred_at, outbox_id) key needs when a retried older event
// arrives after a newer one. In a plain KSUID that byte is random payload:
// it adds sub-second noise under 1 s, or nothing at 250 and above.
func ksuidTime(raw string) (time.Time, bool) {
	if len(raw) != 27 {
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
	var b [20]byte
	n.FillBytes(b[:])
	secs := int64(b[0])<<24 | int64(b[1])<<16 | int64(b[2])<<8 | int64(b[3])
	t := time.Unix(ksuidEpoch+secs, 0).UTC()
	if b[4] < 250 {
		t = t.Add(time.Duration(b[4]) * 4 * time.Millisecond)
	}
	return t, true
}
