package replicator

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrSlotBusy means another process is streaming from the slot; this
	// instance stands by and retries.
	ErrSlotBusy = errors.New("replication slot is in use by another process")
	// ErrFenced means another instance took over the slot since this one
	// started; the apply was rolled back and this instance starts over.
	ErrFenced = errors.New("another replicator instance took over the slot")
	// errStaleState means fold state kept or loaded ahead was written by
	// someone else meanwhile; the batch is folded again on fresh state.
	errStaleState = errors.New("fold state was written by another writer since it was loaded")
	// errPublicationUnusable marks the ConfigError of a publication that
	// does not publish inserts into the outbox: fatal at the first start,
	// but waited out once the process has streamed (an operator in the
	// middle of changing it).
	errPublicationUnusable = errors.New("the publication does not publish inserts into neon_auth.outbox")
)

// ConfigError is a problem with the database or the command line that
// retrying cannot fix; Run returns it instead of reconnecting.
type ConfigError struct {
	msg  string
	kind error // a sentinel the error is an instance of, or nil
}

func (e *ConfigError) Error() string { return e.msg }

func (e *ConfigError) Unwrap() error { return e.kind }

func configErrorf(format string, args ...any) error {
	return &ConfigError{msg: fmt.Sprintf(format, args...)}
}

// permanent reports whether err cannot be cured by reconnecting.
func permanent(err error) bool {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000", "3D000", "42501": // bad password, no access, no database, no privilege
			return true
		}
	}
	return false
}

// Explain turns common connection and permission errors into a sentence
// saying what to do; other errors are returned unchanged.
func Explain(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		if strings.Contains(err.Error(), "pooler") {
			return fmt.Errorf("%w (replication needs Neon's direct host: remove -pooler from the host name)", err)
		}
		return err
	}
	switch pgErr.Code {
	case "28P01":
		return configErrorf("password authentication failed for the database URL's user: check the password in DATABASE_URL")
	case "3D000":
		return configErrorf("database does not exist: %s; check the database name in DATABASE_URL", pgErr.Message)
	case "42501":
		if strings.Contains(pgErr.Message+" "+pgErr.Detail, "replication") || strings.Contains(pgErr.Message, "WAL sender") {
			return configErrorf("the database role lacks the REPLICATION attribute: run ALTER ROLE ... WITH REPLICATION as a superuser, or on Neon use a role created in the console (member of neon_superuser)")
		}
		return configErrorf("permission denied: %s; grant the role the privilege or use the table owner", pgErr.Message)
	}
	return err
}
