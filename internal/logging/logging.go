// Package logging builds the replicator's slog.Logger and keeps secrets out of
// what it prints.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
)

// New returns a logger writing to w. format is auto, text or json: auto means
// tint's coloured text when w is a terminal and JSON otherwise.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	terminal := false
	if f, ok := w.(*os.File); ok {
		terminal = isatty.IsTerminal(f.Fd())
	}
	switch format {
	case "auto":
		if terminal {
			return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lvl, ReplaceAttr: redactAttr})), nil
		}
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl, ReplaceAttr: redactAttr})), nil
	case "text":
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lvl, NoColor: !terminal, ReplaceAttr: redactAttr})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl, ReplaceAttr: redactAttr})), nil
	}
	return nil, fmt.Errorf("log format %q: want auto, text or json", format)
}

// redactAttr scrubs connection-string passwords from every string and error
// value, as a last line of defence behind the code that never logs them.
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); mayHoldSecret(s) {
			a.Value = slog.StringValue(Redact(s))
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok && mayHoldSecret(err.Error()) {
			a.Value = slog.StringValue(Redact(err.Error()))
		}
	}
	return a
}

func mayHoldSecret(s string) bool {
	return strings.Contains(s, "@") || strings.Contains(s, "password") || strings.Contains(s, "whsec_")
}

var (
	// The password runs to the authority's last "@", as in net/url: a raw
	// "@" in a password is accepted by the drivers and must not leave the
	// password's tail in the clear.
	urlUserinfo   = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*):[^/?#\s]*@`)
	keywordSecret = regexp.MustCompile(`(?i)(password\s*=\s*)('[^']*'|[^\s]+)`)
	webhookSecret = regexp.MustCompile(`whsec_[A-Za-z0-9+/=]+`)
)

// Redact replaces passwords in URLs (postgres://user:secret@host) and in
// keyword/value connection strings (password=secret), and webhook secrets
// (whsec_...), with "xxxxx".
func Redact(s string) string {
	s = urlUserinfo.ReplaceAllString(s, "${1}:xxxxx@")
	s = keywordSecret.ReplaceAllString(s, "${1}xxxxx")
	return webhookSecret.ReplaceAllString(s, "whsec_xxxxx")
}

// RedactURL returns the database URL with its password replaced, for display.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return Redact(raw)
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
