package replicator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// catchUpSQL reads the outbox rows of an id range that have no history and
// no reject row, as text so that the same parser serves the WAL and the
// table. A bounded id range (rather than LIMIT after a keyset) keeps each page
// an index range scan with index probes, whatever the table's statistics:
// with LIMIT the planner may hash-join the whole table for every page.
const catchUpSQL = `SELECT o.id::text, o.provider, o.event_type, o.payload::text, o.event_id,
		o.occurred_at::text, o.received_at::text
	FROM neon_auth.outbox o
	WHERE o.id > $1 AND o.id <= $2
		AND NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
		AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)
	ORDER BY o.id`

// catchUp folds every outbox row not yet accounted for, in keyset pages,
// before streaming starts: the initial backfill of rows committed before the
// slot existed, and the recovery after a slot was dropped or invalidated.
func (r *runner) catchUp(ctx context.Context, conn *pgx.Conn, app *applier, slotRecreated bool) error {
	started := time.Now()
	typeMap := pgtype.NewMap()
	var total applyStats
	// Rows committed after this read are in the slot, which exists by now.
	var after, last int64
	if err := conn.QueryRow(ctx, "SELECT COALESCE(min(id) - 1, 0), COALESCE(max(id), 0) FROM neon_auth.outbox").Scan(&after, &last); err != nil {
		return fmt.Errorf("read outbox bounds: %w", err)
	}
	for after < last {
		upper := min(after+int64(r.cfg.BackfillPageSize), last)
		recs, next, err := r.readPage(ctx, conn, typeMap, after, upper)
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
		after = next
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

// readPage reads the unaccounted rows with ids in (after, upper], stopping
// early when their payloads exceed the batch byte cap. It returns the id the
// next page starts after.
func (r *runner) readPage(ctx context.Context, conn *pgx.Conn, typeMap *pgtype.Map, after, upper int64) ([]sourceRecord, int64, error) {
	rows, err := conn.Query(ctx, catchUpSQL, after, upper)
	if err != nil {
		return nil, 0, fmt.Errorf("read outbox page: %w", err)
	}
	defer rows.Close()
	var (
		recs  []sourceRecord
		bytes int
	)
	for rows.Next() {
		var row textRow
		for i, v := range rows.RawValues() {
			if v != nil {
				row[i] = append([]byte{}, v...)
			}
		}
		rec, err := parseRecord(&row, typeMap)
		if err != nil {
			return nil, 0, err
		}
		recs = append(recs, sourceRecord{Record: rec})
		if bytes += recs[len(recs)-1].size(); bytes >= r.cfg.BatchBytes {
			return recs, rec.ID, nil // rows.Close discards the rest of the page
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read outbox page: %w", err)
	}
	return recs, upper, nil
}
