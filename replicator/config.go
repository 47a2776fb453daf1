package replicator

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"
)

// Config is what Run needs. Zero fields take the defaults of withDefaults.
type Config struct {
	// DatabaseURL is the PostgreSQL connection URL; it must allow replication.
	DatabaseURL string
	// Publication is the publication on neon_auth.outbox (default users_sync_outbox).
	Publication string
	// Slot is the logical replication slot (default users_sync).
	Slot string
	// Logger receives the replicator's logs (default: discard).
	Logger *slog.Logger
	// BatchSize caps the events folded in one apply transaction (default 2000).
	BatchSize int
	// BatchBytes caps the memory one batch holds (default 4 MiB), so
	// memory stays bounded whatever the size of the events.
	BatchBytes int
	// BackfillPageSize is the keyset page size of the catch-up (default 5000).
	BackfillPageSize int
	// StatusInterval is how often a standby status update is sent (default: the
	// smaller of 10s and a third of the server's wal_sender_timeout).
	StatusInterval time.Duration
	// MaxBackoff caps the delay between reconnect attempts (default 30s).
	MaxBackoff time.Duration
	// Observer is told what the replicator does, for metrics and
	// readiness (default: nobody).
	Observer Observer

	// skipStartupCatchUp lets benchmarks measure the stream alone on a backlog
	// the slot holds; the catch-up still runs when the slot is created.
	skipStartupCatchUp bool
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (c Config) withDefaults() Config {
	if c.Publication == "" {
		c.Publication = "users_sync_outbox"
	}
	if c.Slot == "" {
		c.Slot = "users_sync"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.BatchSize == 0 {
		c.BatchSize = 2000
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 4 << 20
	}
	if c.BackfillPageSize == 0 {
		c.BackfillPageSize = 5000
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	return c
}

// Validate reports the first field that cannot work, by name.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.DatabaseURL == "":
		return errors.New("database URL is empty: set DATABASE_URL")
	case !identifier.MatchString(c.Publication):
		return fmt.Errorf("publication %q is not a lowercase identifier (letters, digits, _)", c.Publication)
	case !identifier.MatchString(c.Slot):
		return fmt.Errorf("slot %q is not a valid slot name (lowercase letters, digits, _)", c.Slot)
	case c.BatchSize < 1:
		return fmt.Errorf("batch size %d: want at least 1", c.BatchSize)
	case c.BatchBytes < 1:
		return fmt.Errorf("batch bytes %d: want at least 1", c.BatchBytes)
	case c.BackfillPageSize < 1:
		return fmt.Errorf("backfill page size %d: want at least 1", c.BackfillPageSize)
	case c.StatusInterval < 0:
		return fmt.Errorf("status interval %s: want a positive duration", c.StatusInterval)
	}
	return nil
}
