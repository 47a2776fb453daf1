package replicator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/usersync/usersync/outbox"
)

// applier folds batches of outbox changes, each batch in one transaction
// that also advances the checkpoint. A batch costs one round trip when the
// next one is ready as it commits (a backlog): its transaction is begun —
// fenced and its users' state loaded — in the same round trip as the
// commit. A lone batch costs two.
type applier struct {
	conn       *pgx.Conn
	slot       string
	generation int64
	// replayUntil is the commit position up to which a streamed change may
	// already have been applied: by an earlier session (the checkpoint when
	// this one started) or by this session's catch-up (the WAL position when
	// its snapshot was taken). Those changes are looked up and dropped
	// before the fold; later ones cannot be replays.
	replayUntil uint64
	// begun is the transaction begun for the batch that follows, if any.
	begun *begunTx
}

// begunTx is an open transaction, begun for batch b: fenced, locked and
// with the state of b's users loaded, or the error that stopped it.
type begunTx struct {
	b         *batch
	states    map[string]*outbox.State
	forgotten map[string]bool // users erased by forget (forgotten.go)
	applied   map[int64]bool  // changes of b already accounted for (replays)
	err       error
}

// applyStats counts what one apply did.
type applyStats struct {
	Folded   int                      // history rows written (stale included)
	Rejected int                      // outbox_rejects rows written
	Skipped  int                      // changes already accounted for (a replay)
	ops      map[outbox.Operation]int // history rows by operation (observer.go)
	commits  []time.Time              // source commit times of streamed events folded
}

func (s *applyStats) add(o applyStats) {
	s.Folded += o.Folded
	s.Rejected += o.Rejected
	s.Skipped += o.Skipped
	for op, n := range o.ops {
		if s.ops == nil {
			s.ops = make(map[outbox.Operation]int)
		}
		s.ops[op] += n
	}
	s.commits = append(s.commits, o.commits...)
}

// apply folds b and commits it, moving the checkpoint to b.endLSN (0
// leaves it where it is: a chunk of a transaction not yet complete). next,
// when non-nil, is the batch that follows: its transaction is begun in the
// same round trip. If the database refuses b's data, b is retried change by
// change, so that only the change at fault becomes a reject and nothing
// blocks the stream.
func (a *applier) apply(ctx context.Context, b, next *batch) (applyStats, error) {
	if next != nil && len(next.changes) == 0 {
		next = nil
	}
	stats, err := a.applyOnce(ctx, b, next, nil, false)
	if isObjectUnreadable(err) {
		stats, err = a.applyOnce(ctx, b, next, nil, true)
	}
	if err == nil || !isDataError(err) {
		return stats, err
	}
	if len(b.changes) == 1 {
		reason := fmt.Sprintf("the database refused the folded row: %s; fix the payload and insert it again", pgMessage(err))
		return a.applyOnce(ctx, b, nil, &reason, true)
	}
	var total applyStats
	for i := range b.changes {
		one := &batch{changes: b.changes[i : i+1]}
		if i == len(b.changes)-1 {
			one.endLSN = b.endLSN
		}
		s, err := a.apply(ctx, one, nil)
		if err != nil {
			return total, err
		}
		total.add(s)
	}
	return total, nil
}

func (a *applier) applyOnce(ctx context.Context, b, next *batch, forcedReject *string, withTexts bool) (stats applyStats, err error) {
	// Any failure leaves a transaction open or aborted: end it so that the
	// connection stays usable.
	defer func() {
		if err != nil {
			a.begun = nil
			if !a.conn.IsClosed() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				_, _ = a.conn.Exec(rctx, "ROLLBACK")
			}
		}
	}()
	t, err := a.beginFor(ctx, b)
	if err != nil {
		return stats, err
	}
	plan := foldBatch(b, t.states, t.forgotten, t.applied, forcedReject, withTexts)
	if err := a.redact(ctx, plan.redact); err != nil {
		return stats, err
	}
	q := &pgx.Batch{}
	plan.queue(q)
	q.Queue("COMMIT")
	if next != nil {
		a.queueBegin(q, next)
	}
	br := a.conn.SendBatch(ctx, q)
	if stats, err = plan.read(br); err != nil {
		_ = br.Close()
		return stats, err
	}
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return stats, fmt.Errorf("commit: %w", err)
	}
	// b has committed: what goes wrong from here on is next's to report.
	var nextTx *begunTx
	if next != nil {
		nextTx = a.readBegin(br, next)
	}
	if cerr := br.Close(); cerr != nil && nextTx != nil && nextTx.err == nil {
		nextTx.err = fmt.Errorf("begin apply: %w", cerr)
	}
	a.begun = nextTx
	return stats, nil
}

// beginFor returns a transaction begun for b: the one begun with the
// previous batch's commit, or a new one.
func (a *applier) beginFor(ctx context.Context, b *batch) (*begunTx, error) {
	if t := a.begun; t != nil {
		a.begun = nil
		if t.b == b {
			return t, t.err
		}
		// Begun for a batch that is not the one applied now (after a
		// change-by-change retry): start over.
		if _, err := a.conn.Exec(ctx, "ROLLBACK"); err != nil {
			return nil, fmt.Errorf("roll back: %w", err)
		}
	}
	q := &pgx.Batch{}
	a.queueBegin(q, b)
	br := a.conn.SendBatch(ctx, q)
	t := a.readBegin(br, b)
	if err := br.Close(); err != nil && t.err == nil {
		t.err = fmt.Errorf("begin apply: %w", err)
	}
	return t, t.err
}

// foldLockID is the transaction-scoped advisory lock every apply takes, so
// that replicators of different slots on one database (a rename, a
// misconfiguration) cannot interleave their read-fold-write of a user.
const foldLockID = 0x7573796e63666f6c // "usyncfol"

const (
	checkpointCAS = `UPDATE neon_auth.replicator_checkpoint
		SET lsn = GREATEST(lsn, $3::pg_lsn), updated_at = now()
		WHERE slot_name = $1 AND generation = $2`
	// loadStatesSQL reads what the fold needs of each user: the registers
	// and the row's columns, but not raw_json, which the write takes from
	// where it is (the row itself, or the object sent with the batch).
	loadStatesSQL = `SELECT q.id, u.id IS NOT NULL, u.name, u.email, u.created_at, u.updated_at, u.deleted_at,
			s.profile_at, s.profile_outbox_id, s.last_at, s.last_outbox_id
		FROM unnest($1::text[]) AS q(id)
		LEFT JOIN neon_auth.users_sync u ON u.id = q.id
		LEFT JOIN neon_auth.users_sync_state s ON s.user_id = q.id
		WHERE u.id IS NOT NULL OR s.user_id IS NOT NULL`
)

// queueBegin opens b's transaction: the fold lock, the checkpoint
// compare-and-set (the fence: it fails when another instance has taken a
// newer generation, and it serialises appliers), the load of the state of
// b's users, which every change already applied (a replay) is folded
// against as stale, and which of them were forgotten. Reading after the
// fold lock, which resync and forget take too, it sees every write they
// committed.
func (a *applier) queueBegin(q *pgx.Batch, b *batch) {
	q.Queue("BEGIN")
	// Fold state is shared by every slot's replicator: take turns.
	q.Queue("SELECT pg_advisory_xact_lock($1)", int64(foldLockID))
	q.Queue(checkpointCAS, a.slot, a.generation, lsnText(b.endLSN))
	q.Queue(loadStatesSQL, b.userIDs())
	q.Queue(forgottenSQL, b.forgottenCandidates())
	if ids := b.possibleReplays(a.replayUntil); len(ids) > 0 {
		q.Queue(accountedSQL, ids)
	}
}

// accountedSQL finds which of the given outbox rows were applied already.
const accountedSQL = `SELECT outbox_id FROM neon_auth.users_sync_history WHERE outbox_id = ANY($1::int8[])
	UNION ALL
	SELECT outbox_id FROM neon_auth.outbox_rejects WHERE outbox_id = ANY($1::int8[])`

// possibleReplays lists the streamed changes of b committed at or before
// until: the only ones that can have been applied already.
func (b *batch) possibleReplays(until uint64) []int64 {
	var ids []int64
	for i := range b.changes {
		if lsn := b.changes[i].src.LSN; lsn != 0 && lsn <= until {
			ids = append(ids, b.changes[i].src.ID)
		}
	}
	return ids
}

// readBegin reads the results queueBegin asked for.
func (a *applier) readBegin(br pgx.BatchResults, b *batch) *begunTx {
	t := &begunTx{b: b}
	if _, err := br.Exec(); err != nil {
		t.err = fmt.Errorf("begin apply: %w", err)
		return t
	}
	if _, err := br.Exec(); err != nil {
		t.err = fmt.Errorf("take fold lock: %w", err)
		return t
	}
	tag, err := br.Exec()
	if err != nil {
		t.err = fmt.Errorf("advance checkpoint: %w", err)
		return t
	}
	if tag.RowsAffected() != 1 {
		t.err = ErrFenced
		return t
	}
	if t.states, t.err = scanStates(br); t.err != nil {
		return t
	}
	if t.forgotten, t.err = readForgotten(br); t.err != nil {
		return t
	}
	if len(b.possibleReplays(a.replayUntil)) > 0 {
		t.applied, t.err = readAccounted(br)
	}
	return t
}

func readAccounted(br pgx.BatchResults) (map[int64]bool, error) {
	rows, _ := br.Query()
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("load accounted outbox ids: %w", err)
	}
	applied := make(map[int64]bool, len(ids))
	for _, id := range ids {
		applied[id] = true
	}
	return applied, nil
}

// userIDs lists the users of the batch's foldable changes, once each.
func (b *batch) userIDs() []string {
	seen := make(map[string]bool, len(b.changes))
	ids := make([]string, 0, len(b.changes))
	for i := range b.changes {
		c := &b.changes[i]
		if c.reject == "" && !seen[c.ev.UserID] {
			seen[c.ev.UserID] = true
			ids = append(ids, c.ev.UserID)
		}
	}
	return ids
}

func lsnText(lsn uint64) string {
	return fmt.Sprintf("%X/%X", uint32(lsn>>32), uint32(lsn))
}

func scanStates(br pgx.BatchResults) (map[string]*outbox.State, error) {
	states := make(map[string]*outbox.State)
	rows, _ := br.Query()
	defer rows.Close()
	for rows.Next() {
		var (
			id                string
			hasRow            bool
			row               outbox.Row
			profileAt, lastAt *time.Time
			profileID, lastID *int64
		)
		if err := rows.Scan(&id, &hasRow, &row.Name, &row.Email, &row.CreatedAt, &row.UpdatedAt, &row.DeletedAt,
			&profileAt, &profileID, &lastAt, &lastID); err != nil {
			return nil, fmt.Errorf("load user state: %w", err)
		}
		st := &outbox.State{Profile: keyOf(profileAt, profileID), Last: keyOf(lastAt, lastID)}
		if hasRow {
			row.ID = id
			utcTimes(&row)
			st.Row = &row
		}
		states[id] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load user state: %w", err)
	}
	return states, nil
}

// utcTimes puts a loaded row's times in UTC, as the fold produces them.
func utcTimes(r *outbox.Row) {
	for _, t := range []**time.Time{&r.CreatedAt, &r.UpdatedAt, &r.DeletedAt} {
		if *t != nil {
			u := (*t).UTC()
			*t = &u
		}
	}
}

func keyOf(at *time.Time, id *int64) outbox.Key {
	if at == nil || id == nil {
		return outbox.Key{}
	}
	return outbox.Key{At: at.UTC(), OutboxID: *id}
}

// isDataError reports whether the database refused the data itself, which
// retrying the same batch cannot cure: SQLSTATE classes 22 (data exception),
// 23 (integrity constraint) and 54 (program limit, e.g. a key too large for
// its index).
func isDataError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 {
		return false
	}
	switch pgErr.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}

// isObjectUnreadable reports that the fold statement could not read a user
// object it was not given the text of (see foldSQL).
func isObjectUnreadable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "UA001"
}

func pgMessage(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	return err.Error()
}
