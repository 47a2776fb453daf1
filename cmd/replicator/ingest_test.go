package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestIngestCommand_UsageErrors(t *testing.T) {
	const badSecret = "whsec_AAEC whsec_n0t!base64"
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"no secret", nil, nil,
			[]string{"CLERK_WEBHOOK_SECRET", "STACK_WEBHOOK_SECRET", "GENERIC_WEBHOOK_SECRET"}},
		{"blank secret", map[string]string{"STACK_WEBHOOK_SECRET": "  "}, nil,
			[]string{"no webhook secret"}},
		{"malformed secret from the environment", map[string]string{"STACK_WEBHOOK_SECRET": badSecret}, nil,
			[]string{"--stack-secret (STACK_WEBHOOK_SECRET): secret 2 of 2 is not base64"}},
		{"malformed secret flag", nil, []string{"--generic-secret", badSecret},
			[]string{"--generic-secret (GENERIC_WEBHOOK_SECRET)"}},
		{"no database", map[string]string{"CLERK_WEBHOOK_SECRET": "whsec_AAEC"}, nil,
			[]string{"DATABASE_URL"}},
		{"bad max body", map[string]string{"CLERK_WEBHOOK_SECRET": "whsec_AAEC"}, []string{"--max-body", "0"},
			[]string{"--max-body 0"}},
		{"argument", map[string]string{"CLERK_WEBHOOK_SECRET": "whsec_AAEC"}, []string{"now"},
			[]string{"takes no arguments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, name := range []string{"DATABASE_URL", "CLERK_WEBHOOK_SECRET", "STACK_WEBHOOK_SECRET", "GENERIC_WEBHOOK_SECRET"} {
				t.Setenv(name, tt.env[name])
			}
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"replicator", "ingest"}, tt.args...), &stdout, &stderr)
			if code != exitUsage {
				t.Errorf("exit status %d, want %d; stderr: %s", code, exitUsage, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q does not contain %q", stderr.String(), w)
				}
			}
			if strings.Contains(stderr.String(), "n0t!base64") {
				t.Errorf("stderr quotes the secret: %s", stderr.String())
			}
		})
	}
}
