package replicator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
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

// catchUp folds every outbox row not yet accounted for, range by range: the
// initial backfill of rows committed before the slot existed, and the
// recovery after a slot was dropped or invalidated. It reads in one
// repeatable-read transaction on a connection of its own, so each row is
// read once and applied in batches as it arrives, with memory bounded by
// the batch caps whatever the payload sizes.
//
// snapshotReader, when the session created the slot, already reads under
// the snapshot exported with it: exactly the rows the slot will not stream;
// catchUp closes it. Otherwise (the sweep on process start) a fresh snapshot is taken: rows
// committed after it are in the slot, which exists by then.
func (r *runner) catchUp(ctx context.Context, app *applier, snapshotReader *pgx.Conn, slotRecreated bool) error {
	started := time.Now()
	reader := snapshotReader
	if reader == nil {
		var err error
		if reader, err = connectReader(ctx, r.cfg.DatabaseURL); err != nil {
			return err
		}
		if _, err := reader.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"); err != nil {
			_ = reader.Close(context.WithoutCancel(ctx))
			return fmt.Errorf("begin catch-up snapshot: %w", err)
		}
	}
	// The reader, and the snapshot that holds back vacuum, last no longer
	// than the catch-up.
	defer func() { _ = reader.Close(context.WithoutCancel(ctx)) }()
	// The snapshot is taken as this first query starts: every transaction
	// it sees committed before the WAL position read during the query. A
	// streamed change committed up to there may be folded here too, and the
	// stream is told to look for it (a fresh snapshot overlaps the stream;
	// the slot's own snapshot does not, and the position is then not needed).
	var after, last int64
	var walPos string
	if err := reader.QueryRow(ctx, `SELECT COALESCE(min(id) - 1, 0), COALESCE(max(id), 0), pg_current_wal_insert_lsn()::text
		FROM neon_auth.outbox`).Scan(&after, &last, &walPos); err != nil {
		return fmt.Errorf("read outbox bounds: %w", err)
	}
	if snapshotReader == nil {
		pos, err := pglogrepl.ParseLSN(walPos)
		if err != nil {
			return fmt.Errorf("read outbox bounds: %w", err)
		}
		app.replayUntil = max(app.replayUntil, uint64(pos))
	}
	changes := make(chan change, handOffSlots)
	budget := semaphore.NewWeighted(inFlightBytes)
	var total applyStats
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(changes)
		return r.readOutbox(gctx, reader, after, last, changes, budget)
	})
	g.Go(func() (err error) {
		total, err = foldChanges(gctx, app, changes, budget, r.cfg, r.logger)
		return err
	})
	if err := g.Wait(); err != nil {
		return err
	}
	took := time.Since(started).Round(time.Millisecond).String()
	if slotRecreated && total.Folded+total.Rejected > 0 {
		r.logger.Warn("folded outbox rows the lost slot did not carry", "folded", total.Folded, "rejected", total.Rejected, "took", took)
	} else {
		r.logger.Info("caught up with the outbox", "folded", total.Folded, "rejected", total.Rejected, "took", took)
	}
	return nil
}

// readOutbox reads the unaccounted rows with ids in (after, last], range by
// range, decodes them and hands them on, holding at most inFlightBytes of
// them at once.
func (r *runner) readOutbox(ctx context.Context, reader *pgx.Conn, after, last int64, changes chan<- change, budget *semaphore.Weighted) error {
	typeMap := pgtype.NewMap()
	for after < last {
		upper := min(after+int64(r.cfg.BackfillPageSize), last)
		rows, err := reader.Query(ctx, catchUpSQL, after, upper)
		if err != nil {
			return fmt.Errorf("read outbox page: %w", err)
		}
		for rows.Next() {
			var row textRow
			for i, v := range rows.RawValues() {
				if v != nil {
					row[i] = append([]byte{}, v...)
				}
			}
			rec, err := parseRecord(&row, typeMap)
			if err != nil {
				rows.Close()
				return err
			}
			c := decodeChange(sourceRecord{Record: rec})
			if err := budget.Acquire(ctx, changeWeight(&c)); err != nil {
				rows.Close()
				return err
			}
			select {
			case changes <- c:
			case <-ctx.Done():
				rows.Close()
				return ctx.Err()
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read outbox page: %w", err)
		}
		after = upper
	}
	return nil
}

func changeWeight(c *change) int64 { return min(int64(c.size()), inFlightBytes) }

// foldChanges applies changes in batches until the channel closes, the
// next batch begun in the round trip of the one before.
func foldChanges(ctx context.Context, app *applier, changes <-chan change, budget *semaphore.Weighted, cfg Config, logger *slog.Logger) (applyStats, error) {
	q := batchQueue{maxCount: cfg.BatchSize, maxBytes: cfg.BatchBytes}
	var total applyStats
	take := func(c change) {
		budget.Release(changeWeight(&c))
		q.add(c)
	}
	open := true
	for open || q.ready(0) {
		if !q.ready(0) {
			c, ok := <-changes
			if !ok {
				open = false
				continue
			}
			take(c)
		}
	gather: // what has arrived already, up to maxAhead full batches
		for open && len(q.sealed) <= maxAhead {
			select {
			case c, ok := <-changes:
				if !ok {
					open = false
					break gather
				}
				take(c)
			default:
				break gather
			}
		}
		b := q.take(0)
		began := time.Now()
		stats, err := app.apply(ctx, b, q.peek(0, 0), q.peek(1, 0))
		if err != nil {
			return total, fmt.Errorf("catch-up apply: %w", err)
		}
		total.add(reportBatch(cfg.Observer, stats, len(b.changes), time.Since(began), true))
		logger.Debug("applied catch-up batch", "events", len(b.changes), "folded", stats.Folded,
			"rejected", stats.Rejected, "skipped", stats.Skipped, "folded_ahead", stats.Ahead > 0, "took", time.Since(began).String())
	}
	return total, nil
}

// openSnapshotReader opens the catch-up's reader inside a repeatable-read
// transaction that imports snapshot, the one exported when the slot was
// created. It must run before the replication connection's next command,
// which ends the export.
func openSnapshotReader(ctx context.Context, url, snapshot string) (*pgx.Conn, error) {
	reader, err := connectReader(ctx, url)
	if err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
	b.Queue("SET TRANSACTION SNAPSHOT '" + snapshot + "'") // checked by createSlot against snapshotName
	if err := reader.SendBatch(ctx, b).Close(); err != nil {
		_ = reader.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("import the slot's snapshot: %w", err)
	}
	return reader, nil
}
