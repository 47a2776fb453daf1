package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

const pendingSQL = `SELECT o.id FROM neon_auth.outbox o
	WHERE NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
	AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)
	ORDER BY o.id`

// stillPendingSQL keeps the ids of $1 that are still in the outbox and
// still unaccounted for.
const stillPendingSQL = `SELECT o.id FROM neon_auth.outbox o
	WHERE o.id = ANY($1::int8[])
	AND NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
	AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)
	ORDER BY o.id`

// slotPassedSQL tells whether the slot is held by a replicator, and whether
// it has confirmed WAL up to $2 with no catch-up owed: then every outbox row
// committed before $2 has been folded (the slot never confirms WAL whose
// fold has not committed).
const slotPassedSQL = `SELECT COALESCE(s.active, false),
		COALESCE(s.confirmed_flush_lsn >= $2::pg_lsn, false)
		AND COALESCE((SELECT c.caught_up_epoch >= c.catchup_epoch FROM neon_auth.replicator_checkpoint c WHERE c.slot_name = $1), false)
	FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`

// pendingNow returns the ids of the rows not accounted for yet, then the
// server's WAL position: every one of them committed before it.
func (v *verifier) pendingNow(ctx context.Context) ([]int64, string, error) {
	rows, _ := v.conn.Query(ctx, pendingSQL)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, "", fmt.Errorf("read pending outbox rows: %w", err)
	}
	var walAt string
	if err := v.conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&walAt); err != nil {
		return nil, "", fmt.Errorf("read WAL position: %w", err)
	}
	return ids, walAt, nil
}

// checkPending waits, up to Settle and while a replicator holds the slot,
// for the rows pending at the start to be folded. A row the slot has
// confirmed past that is still unaccounted for was lost: a difference. Rows
// nobody is folding are counted as pending, not judged.
func (v *verifier) checkPending(ctx context.Context, pending []int64, walAt string) error {
	deadline := time.Now().Add(v.cfg.Settle)
	for len(pending) > 0 {
		var active, passed bool
		if err := v.conn.QueryRow(ctx, slotPassedSQL, v.cfg.Slot, walAt).Scan(&active, &passed); err != nil {
			return fmt.Errorf("read slot %s: %w", v.cfg.Slot, err)
		}
		rows, _ := v.conn.Query(ctx, stillPendingSQL, pending)
		still, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return fmt.Errorf("read pending outbox rows: %w", err)
		}
		pending = still
		if passed {
			for _, id := range pending {
				if err := v.emit(Difference{OutboxID: id, Column: "accounting", Want: "a history row or a reject row",
					Got: "neither, though the slot confirmed past its commit"}); err != nil {
					return err
				}
			}
			return nil
		}
		if !active || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	v.report.Pending = int64(len(pending))
	return nil
}
