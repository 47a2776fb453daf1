package webhook

import (
	"encoding/binary"
	"math/big"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var ksuidSeq atomic.Uint64

// newKSUID mints a distinct KSUID created at t, as Svix would.
func newKSUID(t time.Time) string {
	b := make([]byte, 20)
	binary.BigEndian.PutUint32(b, uint32(t.Unix()-ksuidEpoch))
	binary.BigEndian.PutUint64(b[12:], ksuidSeq.Add(1))
	n := new(big.Int).SetBytes(b)
	out := make([]byte, 27)
	for i := 26; i >= 0; i-- {
		var d big.Int
		n.DivMod(n, big.NewInt(62), &d)
		out[i] = base62[d.Int64()]
	}
	return string(out)
}

func TestMessageTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	created := time.Date(2025, 5, 30, 8, 15, 42, 0, time.UTC)
	tests := []struct {
		name   string
		id     string
		want   time.Time
		wantOK bool
	}{
		// segmentio/ksuid's README example: inspect prints 2017-10-09 21:00:47 -0700 PDT.
		{"known ksuid", "msg_0ujtsYcgvSTl8PAuAdqWYSMnLOv", time.Date(2017, 10, 10, 4, 0, 47, 0, time.UTC), true},
		{"minted", "msg_" + newKSUID(created), created, true},
		{"minted, a day ahead of the clock", "msg_" + newKSUID(now.Add(24*time.Hour)), now.Add(24 * time.Hour), true},
		{"too far in the future", "msg_" + newKSUID(now.Add(25*time.Hour)), time.Time{}, false},
		{"ksuid epoch", "msg_000000000000000000000000000", time.Unix(ksuidEpoch, 0).UTC(), true},
		{"no msg_ prefix", newKSUID(created), time.Time{}, false},
		{"other prefix", "evt_" + newKSUID(created), time.Time{}, false},
		{"svix docs id, 24 characters", "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Time{}, false},
		{"28 characters", "msg_" + newKSUID(created) + "A", time.Time{}, false},
		{"not base62", "msg_" + strings.Repeat("-", 27), time.Time{}, false},
		{"above 2^160", "msg_" + strings.Repeat("z", 27), time.Time{}, false},
		{"empty", "", time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := messageTime(tt.id, now)
			if ok != tt.wantOK || !got.Equal(tt.want) {
				t.Errorf("messageTime(%q) = %v, %v; want %v, %v", tt.id, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func FuzzMessageTime(f *testing.F) {
	f.Add("msg_0ujtsYcgvSTl8PAuAdqWYSMnLOv")
	f.Add("msg_p5jXN8AQM9LWM0D4loKWxJek")
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, id string) {
		got, ok := messageTime(id, now)
		if ok && (got.Before(time.Unix(ksuidEpoch, 0)) || got.After(now.Add(24*time.Hour))) {
			t.Errorf("messageTime(%q) = %v, outside the plausible range", id, got)
		}
	})
}
