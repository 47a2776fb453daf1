package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(490, 1740), 50, 490 * time.Millisecond},
		{ms(490, 1740), 99, 1740 * time.Millisecond}, // with two samples p99 is the larger
		{ms(5, 1, 4, 2, 3), 50, 3 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 100, 5 * time.Millisecond},
	} {
		if got := percentile(tc.ds, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.ds, tc.p, got, tc.want)
		}
	}
}

func TestSelectFaults(t *testing.T) {
	all := faults
	t.Cleanup(func() { faults = all })
	if err := selectFaults("blackhole, slot"); err != nil || len(faults) != 2 {
		t.Errorf("selectFaults(blackhole, slot) kept %d faults (err %v), want 2", len(faults), err)
	}
	faults = all
	if err := selectFaults("nothing-like-this"); err == nil {
		t.Error("selectFaults of an unknown name succeeded")
	}
}
