package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestIngestCommand_UsageErrors(t *testing.T) {
	const badSecret = "whsec_AAEC whsec_n0t!base64"
	// 24-byte keys, the shortest accepted.
	const (
		good  = "whsec_aW5nZXN0LXRlc3Qta2V5LW9uZS0wMDAw"
		other = "whsec_aW5nZXN0LXRlc3Qta2V5LXR3by0wMDAw"
	)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"no secret", nil, nil,
			[]string{"CLERK_WEBHOOK_SECRET", "STACK_WEBHOOK_SECRET", "WORKOS_WEBHOOK_SECRET", "GENERIC_WEBHOOK_SECRET", "--workos-secret"}},
		{"short WorkOS secret", map[string]string{"WORKOS_WEBHOOK_SECRET": "whsec_n0tLongEnough"}, nil,
			[]string{"secrets of workos (WORKOS_WEBHOOK_SECRET): secret 1 of 1 is 19 bytes long, want at least 24"}},
		{"WorkOS secret, no database", map[string]string{"WORKOS_WEBHOOK_SECRET": "whsec_0FWAiVGkEfGBqqsJH4aNAGBJ4"}, nil,
			[]string{"DATABASE_URL"}},
		{"blank secret", map[string]string{"STACK_WEBHOOK_SECRET": "  "}, nil,
			[]string{"no webhook secret"}},
		{"malformed secret from the environment", map[string]string{"STACK_WEBHOOK_SECRET": badSecret}, nil,
			[]string{"--stack-secret (STACK_WEBHOOK_SECRET): secret 2 of 2 is not base64"}},
		{"malformed secret flag", nil, []string{"--generic-secret", badSecret},
			[]string{"--generic-secret (GENERIC_WEBHOOK_SECRET)"}},
		{"no database", map[string]string{"CLERK_WEBHOOK_SECRET": good}, nil,
			[]string{"DATABASE_URL"}},
		{"bad max body", map[string]string{"CLERK_WEBHOOK_SECRET": good}, []string{"--max-body", "0"},
			[]string{"--max-body 0"}},
		{"body memory below max body", map[string]string{"CLERK_WEBHOOK_SECRET": good}, []string{"--max-body-memory", "1000"},
			[]string{"--max-body-memory 1000: want at least --max-body (1048576)"}},
		{"too few connections", map[string]string{"CLERK_WEBHOOK_SECRET": good}, []string{"--max-conns", "3"},
			[]string{"--max-conns 3: want at least 16"}},
		{"argument", map[string]string{"CLERK_WEBHOOK_SECRET": good}, []string{"now"},
			[]string{"takes no arguments"}},
		{"short secret", map[string]string{"CLERK_WEBHOOK_SECRET": good, "STACK_WEBHOOK_SECRET": other + " whsec_AAEC"}, nil,
			[]string{"STACK_WEBHOOK_SECRET", "secret 2 of 2 is 3 bytes long, want at least 24"}},
		{"one secret for two providers", map[string]string{"CLERK_WEBHOOK_SECRET": good, "GENERIC_WEBHOOK_SECRET": other + " " + good}, nil,
			[]string{"CLERK_WEBHOOK_SECRET and GENERIC_WEBHOOK_SECRET share a secret", "give each endpoint its own secret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, name := range []string{"DATABASE_URL", "CLERK_WEBHOOK_SECRET", "STACK_WEBHOOK_SECRET", "WORKOS_WEBHOOK_SECRET", "GENERIC_WEBHOOK_SECRET"} {
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
			for _, secret := range []string{"n0t!base64", "AAEC", "n0tLongEnough", strings.TrimPrefix(good, "whsec_"), strings.TrimPrefix(other, "whsec_")} {
				if strings.Contains(stderr.String(), secret) {
					t.Errorf("stderr quotes a secret (%q): %s", secret, stderr.String())
				}
			}
		})
	}
}

// TestIngestCommand_UnquotedSecretListNotEchoed (found in review): docs/webhooks.md tells
// WorkOS users to give the old and the new secret "space-separated" while
// rolling, and WorkOS secrets need not start with whsec_. Typed unquoted
// after the flag, the second one becomes a positional argument; the usage
// error must not print it (SPEC: secrets never appear in logs or errors).
func TestIngestCommand_UnquotedSecretListNotEchoed(t *testing.T) {
	const (
		oldSecret = "wk_0ld_S3cret_value_0123456789"
		newSecret = "wk_n3w_S3cret_value_9876543210"
	)
	for _, name := range []string{"DATABASE_URL", "CLERK_WEBHOOK_SECRET", "STACK_WEBHOOK_SECRET", "WORKOS_WEBHOOK_SECRET", "GENERIC_WEBHOOK_SECRET"} {
		t.Setenv(name, "")
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"replicator", "ingest", "--workos-secret", oldSecret, newSecret}, &stdout, &stderr)
	if code != exitUsage {
		t.Errorf("exit status %d, want %d; stderr: %s", code, exitUsage, stderr.String())
	}
	if strings.Contains(stderr.String()+stdout.String(), newSecret) {
		t.Errorf("the usage error prints a webhook secret: %s", stderr.String())
	}
}
