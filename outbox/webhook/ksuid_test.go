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

// newKSUID mints a distinct KSUID created at t, as Svix would (KsuidMs: the
// fifth byte counts 4 ms units).
func newKSUID(t time.Time) string {
	b := make([]byte, 20)
	binary.BigEndian.PutUint32(b, uint32(t.Unix()-ksuidEpoch))
	b[4] = byte(t.Nanosecond() / int(4*time.Millisecond))
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
		{"minted", "msg_" + newKSUID(created), created, true},
		{"minted with milliseconds", "msg_" + newKSUID(created.Add(700*time.Millisecond)), created.Add(700 * time.Millisecond), true},
		{"minted, minutes ahead of the clock", "msg_" + newKSUID(now.Add(4*time.Minute)), now.Add(4 * time.Minute), true},
		{"too far in the future", "msg_" + newKSUID(now.Add(10*time.Minute)), time.Time{}, false},
		{"before 2020: not one of ours", "msg_0ujtsYcgvSTl8PAuAdqWYSMnLOv", time.Time{}, false},
		{"ksuid epoch", "msg_000000000000000000000000000", time.Time{}, false},
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

func TestKSUIDTime_KnownAnswer(t *testing.T) {
	t.Parallel()
	// segmentio/ksuid's README example: inspect prints 2017-10-09 21:00:47 -0700 PDT.
	// Its fifth byte (0xb5) is random payload, read as 181 x 4 ms: a plain KSUID
	// gets sub-second noise, a Svix KsuidMs its real milliseconds.
	got, ok := ksuidTime("0ujtsYcgvSTl8PAuAdqWYSMnLOv")
	if want := time.Date(2017, 10, 10, 4, 0, 47, 724e6, time.UTC); !ok || !got.Equal(want) {
		t.Errorf("ksuidTime = %v, %v; want %v", got, ok, want)
	}
}

func FuzzMessageTime(f *testing.F) {
	f.Add("msg_0ujtsYcgvSTl8PAuAdqWYSMnLOv")
	f.Add("msg_p5jXN8AQM9LWM0D4loKWxJek")
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, id string) {
		got, ok := messageTime(id, now)
		if ok && (got.Before(earliestMessage) || got.After(now.Add(DefaultTolerance))) {
			t.Errorf("messageTime(%q) = %v, outside the plausible range", id, got)
		}
	})
}
