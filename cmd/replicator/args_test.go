package main

import (
	"io"
	"strings"
	"testing"
)

func TestFlagsFirst(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	cases := []struct{ in, want string }{
		{"replicator history user_123 --json", "replicator history --json user_123"},
		{"replicator --log-format json history user_123 --limit 5 --json", "replicator --log-format json history --limit 5 --json user_123"},
		{"replicator --database-url=x as-of 2026-01-01T00:00:00Z u1 u2 --json", "replicator --database-url=x as-of --json 2026-01-01T00:00:00Z u1 u2"},
		{"replicator forget u1 --reason=gdpr", "replicator forget --reason=gdpr u1"},
		{"replicator forget --reason gdpr u1", "replicator forget --reason gdpr u1"},
		{"replicator resync u1 -- --all", "replicator resync u1 -- --all"},
		{"replicator --help", "replicator --help"},
	}
	for _, tc := range cases {
		if got := strings.Join(flagsFirst(app, strings.Fields(tc.in)), " "); got != tc.want {
			t.Errorf("flagsFirst(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
