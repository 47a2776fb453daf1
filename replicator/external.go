package replicator

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// FoldLockID is the key of the transaction-scoped advisory lock that every
// apply transaction takes before it reads and writes fold state.
const FoldLockID = foldLockID

// BeginExternalWrite prepares tx for writing users_sync, users_sync_state or
// users_sync_history outside the apply (resync, forget). It takes the fold
// lock, so no apply interleaves its read-fold-write with the caller's, and
// bumps external_epoch on every checkpoint row, so an apply that keeps fold
// state between transactions knows to drop it: the caller's writes would
// otherwise be overwritten from a stale copy. Call it first in tx.
func BeginExternalWrite(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(FoldLockID)); err != nil {
		return fmt.Errorf("take fold lock: %w", err)
	}
	if _, err := tx.Exec(ctx, "UPDATE neon_auth.replicator_checkpoint SET external_epoch = external_epoch + 1"); err != nil {
		return fmt.Errorf("bump external_epoch: %w", err)
	}
	return nil
}

// CheckSchema returns a *ConfigError saying what to do when the schema is
// missing or older than this binary.
func CheckSchema(ctx context.Context, conn *pgx.Conn) error {
	_, err := preflightSchema(ctx, conn)
	return err
}
