package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/usersync/usersync/outbox"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	pgErr := func(code string) error {
		return fmt.Errorf("insert into neon_auth.outbox: %w", &pgconn.PgError{Code: code, Message: "boom", Where: "JSON data, line 1: secret body"})
	}
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"untranslatable character", pgErr("22P05"), http.StatusBadRequest},
		{"invalid text representation", pgErr("22P02"), http.StatusBadRequest},
		{"stack depth", pgErr("54001"), http.StatusBadRequest},
		{"invalid event", fmt.Errorf("%w: Type", outbox.ErrInvalidEvent), http.StatusBadRequest},
		{"table missing", pgErr("42P01"), http.StatusServiceUnavailable},
		{"admin shutdown", pgErr("57P01"), http.StatusServiceUnavailable},
		{"read only", pgErr("25006"), http.StatusServiceUnavailable},
		{"timeout", fmt.Errorf("insert: %w", context.DeadlineExceeded), http.StatusServiceUnavailable},
		{"connection", errors.New("failed to connect: connection refused"), http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		status, _, reason, _ := classify(tt.err)
		if status != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, status, tt.want)
		}
		// Where and Detail may quote the body; the answer must not.
		if strings.Contains(reason, "secret body") {
			t.Errorf("%s: reason %q quotes the body", tt.name, reason)
		}
	}
}
