package replicator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// catchUpSQL pages through outbox rows with no history and no reject row,
// in id order, as text so that the same parser serves the WAL and the table.
const catchUpSQL = `SELECT o.id::text, o.provider, o.event_type, o.payload::text, o.event_id,
		o.occurred_at::text, o.received_at::text
	FROM neon_auth.outbox o
	WHERE o.id > $1
		AND NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
		AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)
	ORDER BY o.id
	LIMIT $2`

// catchUp folds every outbox row not yet accounted for, in keyset pages,
// before streaming starts: the initial backfill of rows committed before the
// slot existed, and the recovery after a slot was dropped or invalidated.
func (r *runner) catchUp(ctx context.Context, conn *pgx.Conn, app *applier, slotRecreated bool) error {
	started := time.Now()
	typeMap := pgtype.NewMap()
	var total applyStats
	after := int64(0)
	for {
		recs, last, more, err := r.readPage(ctx, conn, typeMap, after)
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			stats, err := app.apply(ctx, recs, 0)
			if err != nil {
				return fmt.Errorf("catch-up apply: %w", err)
			}
			total.add(stats)
		}
		if !more {
			break
		}
		after = last
	}
	took := time.Since(started).Round(time.Millisecond)
	switch {
	case slotRecreated && total.Folded+total.Rejected > 0:
		r.logger.Warn("folded outbox rows the lost slot did not carry", "folded", total.Folded, "rejected", total.Rejected, "took", took.String())
	default:
		r.logger.Info("caught up with the outbox", "folded", total.Folded, "rejected", total.Rejected, "took", took.String())
	}
	return nil
}

// readPage reads one page of unaccounted rows after id, stopping early when
// the page's payloads exceed the batch byte cap.
func (r *runner) readPage(ctx context.Context, conn *pgx.Conn, typeMap *pgtype.Map, after int64) ([]sourceRecord, int64, bool, error) {
	rows, err := conn.Query(ctx, catchUpSQL, after, r.cfg.BackfillPageSize)
	if err != nil {
		return nil, 0, false, fmt.Errorf("read outbox page: %w", err)
	}
	defer rows.Close()
	var (
		recs  []sourceRecord
		bytes int
		last  int64
		n     int
	)
	for rows.Next() {
		n++
		var row textRow
		for i, v := range rows.RawValues() {
			if v != nil {
				row[i] = append([]byte{}, v...)
			}
		}
		rec, err := parseRecord(&row, typeMap)
		if err != nil {
			return nil, 0, false, err
		}
		recs = append(recs, sourceRecord{Record: rec})
		last = rec.ID
		if bytes += recs[len(recs)-1].size(); bytes >= r.cfg.BatchBytes {
			return recs, last, true, nil // rows.Close discards the rest of the page
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, false, fmt.Errorf("read outbox page: %w", err)
	}
	return recs, last, n == r.cfg.BackfillPageSize, nil
}
