package logging

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, secret string }{
		{"connect postgres://app:hunter2@db.example.com/neondb failed", "hunter2"},
		{"postgresql://app:p%40ss@host:5432/db?sslmode=require", "p%40ss"},
		{"host=db user=app password=hunter2 dbname=x", "hunter2"},
		{"host=db password='with space' dbname=x", "with space"},
		{"secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw rotated", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
	}
	for _, tc := range cases {
		if got := Redact(tc.in); strings.Contains(got, tc.secret) {
			t.Errorf("Redact(%q) = %q, still holds the secret", tc.in, got)
		}
	}
	// A raw "@" in the password: the drivers take the authority's last "@".
	for in, want := range map[string]string{
		"dial postgres://app:hun@ter2@db.example.com/neondb: refused": "dial postgres://app:xxxxx@db.example.com/neondb: refused",
		"postgres://app:a@b:c@host:5432?sslmode=require":              "postgres://app:xxxxx@host:5432?sslmode=require",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Redact("postgres://app@host/db"); got != "postgres://app@host/db" {
		t.Errorf("Redact changed a URL without a password: %q", got)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	got := RedactURL("postgres://app:hunter2@host/db?sslmode=require")
	if strings.Contains(got, "hunter2") || !strings.Contains(got, "app:xxxxx@host/db") {
		t.Errorf("RedactURL = %q", got)
	}
}

func TestNew_RedactsEveryFormat(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"auto", "text", "json"} {
		var buf bytes.Buffer
		logger, err := New(&buf, format, "debug")
		if err != nil {
			t.Fatal(err)
		}
		logger.Info("connecting", "url", "postgres://app:hunter2@host/db", "error", errors.New("dial postgres://app:hunter2@host/db: refused"))
		if out := buf.String(); strings.Contains(out, "hunter2") || !strings.Contains(out, "connecting") {
			t.Errorf("format %s logged %q", format, out)
		}
	}
}

func TestNew_BadSettings(t *testing.T) {
	t.Parallel()
	if _, err := New(&bytes.Buffer{}, "xml", "info"); err == nil || !strings.Contains(err.Error(), "auto, text or json") {
		t.Errorf("bad format: %v", err)
	}
	if _, err := New(&bytes.Buffer{}, "json", "loud"); err == nil || !strings.Contains(err.Error(), "debug, info, warn or error") {
		t.Errorf("bad level: %v", err)
	}
}
