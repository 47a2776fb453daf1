package replicator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
)

// begunTx is an open transaction, begun for batch b: fenced and locked,
// with the state of b's users when it was loaded with the begin, or the
// error that stopped it.
type begunTx struct {
	b *batch
	// fingerprint tells, by changing, that fold state was written by
	// someone else since the previous begin (see fenceSQL).
	fingerprint string
	load        *loaded // nil when b's state was loaded ahead (b.pre)
	err         error
}

// loaded is what the fold of a batch needs from the database.
type loaded struct {
	states    map[string]*outbox.State
	forgotten map[string]bool // users erased by forget (forgotten.go)
	applied   map[int64]bool  // changes already accounted for (replays)
}

// beginFor returns a transaction begun for b: the one begun with the
// previous batch's commit, or a new one, which also loads the state of
// next's users so that next can be folded ahead.
func (a *applier) beginFor(ctx context.Context, b, next *batch) (*begunTx, error) {
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
	forgetAhead(b, next)
	q := &pgx.Batch{}
	a.queueBegin(q, b, true, next)
	br := a.conn.SendBatch(ctx, q)
	t := a.readBegin(br, b, true, next)
	if err := br.Close(); err != nil && t.err == nil {
		t.err = fmt.Errorf("begin apply: %w", err)
	}
	return t, t.err
}

// planFor folds t's batch: the fold done ahead when nobody else wrote fold
// state since the state it used was loaded, else a fold on state loaded
// now. A retry (with the objects' texts, or every change a reject) folds
// again.
func (a *applier) planFor(ctx context.Context, t *begunTx, forcedReject *string, withTexts bool) (*foldPlan, error) {
	b := t.b
	ahead := b.pre != nil && b.pre.fingerprint == t.fingerprint
	if ahead && b.spec != nil && forcedReject == nil && !withTexts {
		return b.spec, nil
	}
	ld := t.load
	if ld == nil {
		var err error
		if ld, err = a.loadNow(ctx, b); err != nil {
			return nil, err
		}
	}
	return foldBatch(b, ld, forcedReject, withTexts), nil
}

// loadNow loads the state of b's users inside b's open transaction.
func (a *applier) loadNow(ctx context.Context, b *batch) (*loaded, error) {
	q := &pgx.Batch{}
	a.queueLoad(q, b)
	br := a.conn.SendBatch(ctx, q)
	ld, err := a.readLoad(br, b)
	if cerr := br.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("load user state: %w", cerr)
	}
	return ld, err
}

// foldLockID is the transaction-scoped advisory lock every apply takes, so
// that replicators of different slots on one database (a rename, a
// misconfiguration) cannot interleave their read-fold-write of a user.
const foldLockID = 0x7573796e63666f6c // "usyncfol"

const (
	// fenceSQL is the fence (neon_auth.replicator_fence, migration 0005):
	// it fails (UF001) when another instance has taken a newer generation,
	// moves the checkpoint, and returns a fingerprint of the writes to fold
	// state by others than this apply. Given the fingerprint expected ($4),
	// it fails (UF002) when it changed. State loaded ahead, or kept from
	// earlier transactions, is good while the fingerprint stays the same.
	fenceSQL = `SELECT neon_auth.replicator_fence($1, $2, $3::pg_lsn, $4)`
	// loadStatesSQL reads what the fold needs of each user: the registers
	// and the row's columns, but not raw_json, which the write takes from
	// where it is (the row itself, or the object's outbox row).
	loadStatesSQL = `SELECT q.id, u.id IS NOT NULL, u.name, u.email, u.created_at, u.updated_at, u.deleted_at,
			s.profile_at, s.profile_outbox_id, s.last_at, s.last_outbox_id
		FROM unnest($1::text[]) AS q(id)
		LEFT JOIN neon_auth.users_sync u ON u.id = q.id
		LEFT JOIN neon_auth.users_sync_state s ON s.user_id = q.id
		WHERE u.id IS NOT NULL OR s.user_id IS NOT NULL`
	// accountedSQL finds which of a batch's outbox rows were accounted for
	// already: in history, among those that may be replays ($1), and among
	// rejects, every one ($2). A history row is looked up only where the
	// replay horizon says one may be (a replay folded again is stale and
	// its history insert conflicts, a backstop); a reject has no such
	// backstop, and one can be made beyond any horizon a session knows of —
	// by a catch-up whose session ended, or by another slot's replicator.
	accountedSQL = `SELECT outbox_id FROM neon_auth.users_sync_history WHERE outbox_id = ANY($1::int8[])
		UNION ALL
		SELECT outbox_id FROM neon_auth.outbox_rejects WHERE outbox_id = ANY($2::int8[])`
	// unrejectedSQL fails (UF002) when one of the outbox rows has a reject:
	// a batch folded on cached state loads nothing, so it checks in its
	// own transaction.
	unrejectedSQL = `SELECT neon_auth.replicator_unrejected($1::int8[])`
)

// queueBegin opens b's transaction: the fold lock, then the checkpoint
// compare-and-set, which serialises appliers and fences a superseded one.
// With loadSelf, it loads the state of b's users; with after, that of
// after's users, for after to be folded ahead. Reading after the fold lock,
// which resync and forget take too, it sees every write they committed.
func (a *applier) queueBegin(q *pgx.Batch, b *batch, loadSelf bool, after *batch) {
	q.Queue("BEGIN")
	// Fold state is shared by every slot's replicator: take turns.
	q.Queue("SELECT pg_advisory_xact_lock($1)", int64(foldLockID))
	q.Queue(fenceSQL, a.slot, a.generation, lsnText(b.endLSN), nil)
	if loadSelf {
		a.queueLoad(q, b)
	}
	if after != nil {
		a.queueLoad(q, after)
	}
}

// readBegin reads the results queueBegin asked for.
func (a *applier) readBegin(br pgx.BatchResults, b *batch, loadSelf bool, after *batch) *begunTx {
	t := &begunTx{b: b}
	if _, err := br.Exec(); err != nil {
		t.err = fmt.Errorf("begin apply: %w", err)
		return t
	}
	if _, err := br.Exec(); err != nil {
		t.err = fmt.Errorf("take fold lock: %w", err)
		return t
	}
	if t.fingerprint, t.err = readFence(br); t.err != nil {
		return t
	}
	if loadSelf {
		if t.load, t.err = a.readLoad(br, b); t.err != nil {
			return t
		}
	}
	if after != nil {
		if ld, err := a.readLoad(br, after); err == nil {
			after.pre = &preload{fingerprint: t.fingerprint, loaded: *ld}
		}
	}
	return t
}

// queueLoad asks for the state of b's users, which of them were forgotten,
// and which of b's changes were applied already.
func (a *applier) queueLoad(q *pgx.Batch, b *batch) {
	q.Queue(loadStatesSQL, b.userIDs())
	q.Queue(forgottenSQL, b.forgottenCandidates())
	q.Queue(accountedSQL, b.possibleReplays(a.replayUntil), b.outboxIDs())
}

func (a *applier) readLoad(br pgx.BatchResults, b *batch) (*loaded, error) {
	ld := &loaded{}
	var err error
	if ld.states, err = scanStates(br); err != nil {
		return nil, err
	}
	if ld.forgotten, err = readForgotten(br); err != nil {
		return nil, err
	}
	if ld.applied, err = readAccounted(br); err != nil {
		return nil, err
	}
	return ld, nil
}

// outboxIDs lists the outbox rows of b's changes.
func (b *batch) outboxIDs() []int64 {
	ids := make([]int64, len(b.changes))
	for i := range b.changes {
		ids[i] = b.changes[i].src.ID
	}
	return ids
}

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

// readFence reads the result of fenceSQL.
func readFence(br pgx.BatchResults) (string, error) {
	var fingerprint string
	err := br.QueryRow().Scan(&fingerprint)
	switch {
	case sqlState(err) == "UF001":
		return "", ErrFenced
	case sqlState(err) == "UF002":
		return "", errStaleState
	case err != nil:
		return "", fmt.Errorf("advance checkpoint: %w", err)
	}
	return fingerprint, nil
}
