package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// checkpoint is the slot's row of neon_auth.replicator_checkpoint.
type checkpoint struct {
	LSN           pglogrepl.LSN
	Generation    int64
	CatchUpEpoch  int64
	CaughtUpEpoch int64
	Fresh         bool // this is the first instance ever to own the slot
}

// owesCatchUp reports whether a slot (re)creation has not yet been followed
// by a complete catch-up.
func (c checkpoint) owesCatchUp() bool { return c.CaughtUpEpoch < c.CatchUpEpoch }

// ownershipLockWait is how long one attempt to take the checkpoint row
// waits before looking at who holds it.
var ownershipLockWait = 10 * time.Second

// takeOwnership starts a new generation for the slot's checkpoint row: from
// now on, applies of any older instance fail their compare-and-set. Only the
// instance streaming from the slot calls it, so a standby never fences the
// active instance. With reset, the row's LSN restarts at resetTo (a new
// slot, or a row copied from another cluster).
//
// The row may be held by an older instance caught mid-apply. Usually the
// server ends that transaction (idle_in_transaction_session_timeout), but
// not when the old process stopped while the server was writing it results:
// that backend stays active, blocked on the socket, for as long as the
// process is stopped. Since this instance holds the slot, the holder is
// stale by definition; after each bounded wait, a holder that is a
// replicator's connection is terminated. Any other holder (a person in psql)
// is waited for, with a warning saying who it is.
func takeOwnership(ctx context.Context, conn *pgx.Conn, slot string, reset bool, resetTo pglogrepl.LSN, logger *slog.Logger) (checkpoint, error) {
	for {
		c, err := bumpGeneration(ctx, conn, slot, reset, resetTo)
		if !isLockTimeout(err) {
			return c, err
		}
		if err := evictStaleHolder(ctx, conn, slot, logger); err != nil {
			return c, err
		}
	}
}

func bumpGeneration(ctx context.Context, conn *pgx.Conn, slot string, reset bool, resetTo pglogrepl.LSN) (checkpoint, error) {
	var c checkpoint
	var lsnText string
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(fmt.Sprintf("SET LOCAL lock_timeout = %d", ownershipLockWait.Milliseconds()))
	q := b.Queue(`INSERT INTO neon_auth.replicator_checkpoint AS c (slot_name, generation, lsn)
		VALUES ($1, 1, $3::pg_lsn)
		ON CONFLICT (slot_name) DO UPDATE SET generation = c.generation + 1, updated_at = now(),
			lsn = CASE WHEN $2 OR c.lsn > pg_current_wal_flush_lsn() THEN $3::pg_lsn ELSE c.lsn END
		RETURNING generation, lsn::text, catchup_epoch, caught_up_epoch`, slot, reset, resetTo.String())
	q.QueryRow(func(row pgx.Row) error { return row.Scan(&c.Generation, &lsnText, &c.CatchUpEpoch, &c.CaughtUpEpoch) })
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return c, fmt.Errorf("take checkpoint of slot %s: %w", slot, err)
	}
	var err error
	c.Fresh = c.Generation == 1
	c.LSN, err = pglogrepl.ParseLSN(lsnText)
	return c, err
}

func isLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03" // lock_not_available
}

// rowHolder is the backend whose transaction holds the checkpoint row.
type rowHolder struct {
	PID             int32
	ApplicationName string
	State           string
}

// checkpointRowHolder finds the backend holding the slot's checkpoint row:
// the row's xmax is the locking transaction, whose id every backend holds
// an exclusive lock on for as long as it runs.
func checkpointRowHolder(ctx context.Context, conn *pgx.Conn, slot string) (*rowHolder, error) {
	var h rowHolder
	err := conn.QueryRow(ctx, `SELECT a.pid, COALESCE(a.application_name, ''), COALESCE(a.state, '')
		FROM neon_auth.replicator_checkpoint c
		JOIN pg_locks l ON l.locktype = 'transactionid' AND l.transactionid = c.xmax AND l.mode = 'ExclusiveLock' AND l.granted
		JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE c.slot_name = $1 AND a.pid <> pg_backend_pid()`, slot).Scan(&h.PID, &h.ApplicationName, &h.State)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil // released meanwhile, or held by a multixact of lockers
	}
	if err != nil {
		return nil, fmt.Errorf("find the holder of the checkpoint row: %w", err)
	}
	return &h, nil
}

// evictStaleHolder terminates the backend holding the checkpoint row when it
// is a replicator's, and otherwise says who it is waiting for.
func evictStaleHolder(ctx context.Context, conn *pgx.Conn, slot string, logger *slog.Logger) error {
	h, err := checkpointRowHolder(ctx, conn, slot)
	if err != nil || h == nil {
		return err
	}
	if h.ApplicationName != replicatorAppName {
		logger.Warn("waiting for a session that is not a replicator's to release the checkpoint row; end its transaction to let this instance take over",
			"slot", slot, "pid", h.PID, "application_name", h.ApplicationName, "state", h.State, "waited", ownershipLockWait.String())
		return nil
	}
	logger.Warn("a replicator connection of an instance that no longer holds the slot keeps the checkpoint row locked; terminating it",
		"slot", slot, "pid", h.PID, "state", h.State, "waited", ownershipLockWait.String())
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_terminate_backend($1)", h.PID).Scan(&ok); err != nil {
		return fmt.Errorf("terminate stale replicator backend %d: %w", h.PID, Explain(err))
	}
	return nil
}

// markCaughtUp records that a catch-up that started at epoch completed.
func markCaughtUp(ctx context.Context, conn *pgx.Conn, slot string, generation, epoch int64) error {
	tag, err := conn.Exec(ctx, `UPDATE neon_auth.replicator_checkpoint
		SET caught_up_epoch = GREATEST(caught_up_epoch, $3), updated_at = now()
		WHERE slot_name = $1 AND generation = $2`, slot, generation, epoch)
	if err != nil {
		return fmt.Errorf("record catch-up: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return ErrFenced
	}
	return nil
}
