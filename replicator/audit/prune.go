package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/replicator"
)

// PruneConfig says what Prune deletes. Zero fields take the defaults.
type PruneConfig struct {
	// OutboxOlderThan is the age past which (by received_at) an outbox row
	// may be deleted; it must be positive.
	OutboxOlderThan time.Duration
	// HistoryOlderThan is the age past which (by applied_at) a history row
	// may be deleted; zero keeps all history.
	HistoryOlderThan time.Duration
	// DryRun counts what would be deleted and deletes nothing.
	DryRun bool
	// BatchSize is the number of rows examined per statement (default 500):
	// each delete is its own short transaction.
	BatchSize int
}

// PruneReport says what Prune deleted.
type PruneReport struct {
	DryRun bool `json:"dry_run"`
	// Outbox is the outbox's result; History is nil when history was kept.
	Outbox  PruneResult  `json:"outbox"`
	History *PruneResult `json:"history,omitempty"`
}

// PruneResult is the result for one table.
type PruneResult struct {
	// Cutoff is the server time before which rows were eligible.
	Cutoff time.Time `json:"cutoff"`
	// Deleted counts the rows deleted (with DryRun: that would be).
	Deleted int64 `json:"deleted"`
	// Kept counts the rows older than Cutoff that had to stay: for the
	// outbox, winning events and rows not yet folded; for history, rows of
	// outbox rows still present and rows the slot could replay.
	Kept int64 `json:"kept"`
}

// outboxPrunableSQL lists, among the outbox rows $1 received before $2,
// those Prune may delete: accounted for, and not able to win a register
// again. A rejected row folds nothing. A forgotten user's rows are no one's
// winners. A folded event may go only when a witness shows it lost for
// good: another folded event of its user, still in the outbox, competing
// for the same register with a greater key — for a user.deleted (which
// competes only for liveness) any event, for a created or updated (profile
// and liveness) another created or updated. So each register's newest
// competitor always stays, and the fold of what is left is the fold of
// everything. The witnesses tried are the events users_sync_state names
// (one lookup each, however many events a user has), but each is checked
// against the history and the outbox, not trusted: registers damaged by a
// hand edit or a bad restore (what verify and resync are for) can only
// keep a row that could have gone, never delete a winner.
const outboxPrunableSQL = `WITH prunable AS (
		SELECT o.id FROM neon_auth.outbox o
		WHERE o.id = ANY($1::int8[]) AND o.received_at < $2
		AND ((EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)
				AND NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id))
			OR EXISTS (SELECT 1 FROM neon_auth.users_sync_history h
				WHERE h.outbox_id = o.id
				AND (EXISTS (SELECT 1 FROM neon_auth.forgotten_users f WHERE f.user_id = h.user_id)
					OR EXISTS (SELECT 1 FROM neon_auth.users_sync_state s
						JOIN neon_auth.users_sync_history w ON w.outbox_id IN (s.profile_outbox_id, s.last_outbox_id)
						JOIN neon_auth.outbox wo ON wo.id = w.outbox_id
						WHERE s.user_id = h.user_id AND w.user_id = h.user_id AND w.outbox_id <> o.id
						AND (h.event_type = 'user.deleted' OR w.event_type <> 'user.deleted')
						AND (w.occurred_at, w.outbox_id) > (h.occurred_at, h.outbox_id)))))
	)`

// Prune deletes outbox rows older than cfg.OutboxOlderThan that are
// accounted for and can never again win a register (see outboxPrunableSQL),
// and, with cfg.HistoryOlderThan, history rows older than that whose outbox
// row is gone and that the slot can no longer replay. It works in batches of
// cfg.BatchSize ids, each delete its own transaction, so it is safe while
// the replicator streams (the publication does not publish deletes) and
// never holds locks for long. It changes no users_sync row or register, so
// users_sync still equals the fold of what is left and Verify passes.
func Prune(ctx context.Context, conn *pgx.Conn, cfg PruneConfig) (PruneReport, error) {
	report := PruneReport{DryRun: cfg.DryRun}
	if cfg.OutboxOlderThan <= 0 {
		return report, errors.New("outbox age must be positive")
	}
	if cfg.HistoryOlderThan < 0 {
		return report, errors.New("history age must be positive")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if err := replicator.CheckSchema(ctx, conn); err != nil {
		return report, err
	}
	var err error
	if report.Outbox, err = pruneOutbox(ctx, conn, cfg); err != nil {
		return report, err
	}
	if cfg.HistoryOlderThan > 0 {
		h, err := pruneHistory(ctx, conn, cfg)
		report.History = &h
		if err != nil {
			return report, err
		}
	}
	return report, nil
}

// cutoff returns the server's now() minus age.
func cutoff(ctx context.Context, conn *pgx.Conn, age time.Duration) (time.Time, error) {
	var t time.Time
	err := conn.QueryRow(ctx, "SELECT now() - make_interval(secs => $1)", age.Seconds()).Scan(&t)
	if err != nil {
		return t, fmt.Errorf("read server time: %w", err)
	}
	return t.UTC(), nil
}

func pruneOutbox(ctx context.Context, conn *pgx.Conn, cfg PruneConfig) (PruneResult, error) {
	var res PruneResult
	var err error
	if res.Cutoff, err = cutoff(ctx, conn, cfg.OutboxOlderThan); err != nil {
		return res, err
	}
	verb := outboxPrunableSQL + " DELETE FROM neon_auth.outbox o USING prunable p WHERE o.id = p.id RETURNING o.id"
	if cfg.DryRun {
		verb = outboxPrunableSQL + " SELECT id FROM prunable"
	}
	var after int64
	for {
		rows, _ := conn.Query(ctx, `SELECT id FROM neon_auth.outbox WHERE id > $1 AND received_at < $2 ORDER BY id LIMIT $3`,
			after, res.Cutoff, cfg.BatchSize)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return res, fmt.Errorf("read old outbox rows: %w", err)
		}
		if len(ids) == 0 {
			return res, nil
		}
		after = ids[len(ids)-1]
		tag, err := conn.Exec(ctx, verb, ids, res.Cutoff)
		if err != nil {
			return res, fmt.Errorf("prune outbox: %w", err)
		}
		res.Deleted += tag.RowsAffected()
		res.Kept += int64(len(ids)) - tag.RowsAffected()
	}
}
