package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// historyPrunableSQL picks, among the history rows $1 applied before $2,
// those Prune may delete: their outbox row is gone (while it is there, its
// history row is what marks it folded), and no slot can replay their event
// — else the replay, finding no history row, would fold it again. A resync
// row folds no event. With no slot ($3) nothing is replayed. A streamed
// row is safe below the slots' confirmed position ($4); a row folded by the
// catch-up has no source LSN, and is safe when applied before $5, the source
// commit time of a streamed event the slots have confirmed: it committed
// before it was applied, so before that event, so below the position too.
const historyPrunableSQL = `h.id = ANY($1::int8[]) AND h.applied_at < $2
	AND (h.outbox_id IS NULL OR NOT EXISTS (SELECT 1 FROM neon_auth.outbox o WHERE o.id = h.outbox_id))
	AND (h.outbox_id IS NULL OR $3::boolean
		OR (h.source_lsn IS NOT NULL AND h.source_lsn < $4::pg_lsn)
		OR (h.source_lsn IS NULL AND h.applied_at < $5::timestamptz))`

// replayHorizon returns whether any of the replicator's slots exists, the
// smallest confirmed position among them, and the source commit time of a
// streamed event below it (nil when there is none).
func replayHorizon(ctx context.Context, conn *pgx.Conn) (bool, string, *time.Time, error) {
	var slots int
	var confirmed *string
	err := conn.QueryRow(ctx, `SELECT count(*), min(confirmed_flush_lsn)::text FROM pg_replication_slots
		WHERE database = current_database() AND slot_name IN (SELECT slot_name FROM neon_auth.replicator_checkpoint)`).
		Scan(&slots, &confirmed)
	if err != nil {
		return false, "", nil, fmt.Errorf("read the slots' confirmed position: %w", err)
	}
	if slots == 0 {
		return false, "0/0", nil, nil
	}
	horizon := "0/0"
	if confirmed != nil {
		horizon = *confirmed
	}
	var safeBefore *time.Time
	err = conn.QueryRow(ctx, `SELECT source_committed_at FROM neon_auth.users_sync_history
		WHERE source_lsn < $1::pg_lsn ORDER BY id DESC LIMIT 1`, horizon).Scan(&safeBefore)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, "", nil, fmt.Errorf("read the replay horizon: %w", err)
	}
	return true, horizon, safeBefore, nil
}

func pruneHistory(ctx context.Context, conn *pgx.Conn, cfg PruneConfig) (PruneResult, error) {
	var res PruneResult
	var err error
	if res.Cutoff, err = cutoff(ctx, conn, cfg.HistoryOlderThan); err != nil {
		return res, err
	}
	anySlot, horizon, safeBefore, err := replayHorizon(ctx, conn)
	if err != nil {
		return res, err
	}
	verb := "DELETE FROM neon_auth.users_sync_history h WHERE " + historyPrunableSQL + " RETURNING h.id"
	if cfg.DryRun {
		verb = "SELECT h.id FROM neon_auth.users_sync_history h WHERE " + historyPrunableSQL
	}
	var after int64
	for {
		rows, _ := conn.Query(ctx, `SELECT id FROM neon_auth.users_sync_history WHERE id > $1 AND applied_at < $2 ORDER BY id LIMIT $3`,
			after, res.Cutoff, cfg.BatchSize)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return res, fmt.Errorf("read old history rows: %w", err)
		}
		if len(ids) == 0 {
			return res, nil
		}
		after = ids[len(ids)-1]
		tag, err := conn.Exec(ctx, verb, ids, res.Cutoff, !anySlot, horizon, safeBefore)
		if err != nil {
			return res, fmt.Errorf("prune history: %w", err)
		}
		res.Deleted += tag.RowsAffected()
		res.Kept += int64(len(ids)) - tag.RowsAffected()
	}
}
