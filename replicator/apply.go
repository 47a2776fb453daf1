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
// that also advances the checkpoint. With a backlog, a batch costs one round
// trip and the database is not kept waiting for the fold: the round trip
// that commits a batch also begins the next one's transaction and loads the
// state of the users of the one after, and while the database works, the
// next batch is folded ahead on that state and on what this batch leaves
// (speculate.go). A lone batch costs two round trips.
type applier struct {
	conn       *pgx.Conn
	slot       string
	generation int64
	// replayUntil is the commit position up to which a streamed change is
	// expected to have a history row already: from an earlier session (the
	// checkpoint when this one started) or from this session's catch-up
	// (the WAL position when its snapshot was taken). Those are looked up
	// and dropped before the fold. A later one that has one (a chunk of a
	// transaction the checkpoint never passed) folds as stale and its
	// history insert conflicts. Rejects, which have no such backstop, are
	// looked up for every change (accountedSQL, unrejectedSQL).
	replayUntil uint64
	// begun is the transaction begun for the batch that follows, if any.
	begun *begunTx
	// cache is users' fold state as the committed batches left it.
	cache stateCache
}

// applyStats counts what one apply did.
type applyStats struct {
	Folded   int                      // history rows written (stale included)
	Rejected int                      // outbox_rejects rows written
	Skipped  int                      // changes already accounted for (a replay)
	ops      map[outbox.Operation]int // history rows by operation (observer.go)
	commits  []time.Time              // source commit times of streamed events folded
	Ahead    int                      // batches whose fold was done ahead (speculate.go)
}

func (s *applyStats) add(o applyStats) {
	s.Folded += o.Folded
	s.Rejected += o.Rejected
	s.Skipped += o.Skipped
	s.Ahead += o.Ahead
	for op, n := range o.ops {
		if s.ops == nil {
			s.ops = make(map[outbox.Operation]int)
		}
		s.ops[op] += n
	}
	s.commits = append(s.commits, o.commits...)
}

// apply folds b and commits it, moving the checkpoint to b.endLSN (0
// leaves it where it is: a chunk of a transaction not yet complete). next
// and after, when non-nil, are the batches that follow: next's transaction
// is begun and after's users' state loaded in the same round trip. If the
// database refuses b's data, b is retried change by change, so that only the
// change at fault becomes a reject and nothing blocks the stream.
func (a *applier) apply(ctx context.Context, b, next, after *batch) (applyStats, error) {
	if next != nil && len(next.changes) == 0 {
		next = nil
	}
	if next == nil || (after != nil && len(after.changes) == 0) {
		after = nil
	}
	stats, err := a.applyOnce(ctx, b, next, after, nil, false)
	if errors.Is(err, errStaleState) { // the cache was stale: fold on fresh state
		stats, err = a.applyOnce(ctx, b, next, after, nil, false)
	}
	if isObjectUnreadable(err) {
		stats, err = a.applyOnce(ctx, b, next, after, nil, true)
	}
	if err == nil || !isDataError(err) {
		return stats, err
	}
	if len(b.changes) == 1 {
		reason := fmt.Sprintf("the database refused the folded row: %s; fix the payload and insert it again", pgMessage(err))
		return a.applyOnce(ctx, b, nil, nil, &reason, true)
	}
	var total applyStats
	for i := range b.changes {
		one := &batch{changes: b.changes[i : i+1]}
		if i == len(b.changes)-1 {
			one.endLSN = b.endLSN
		}
		s, err := a.apply(ctx, one, nil, nil)
		if err != nil {
			return total, err
		}
		total.add(s)
	}
	return total, nil
}

func (a *applier) applyOnce(ctx context.Context, b, next, after *batch, forcedReject *string, withTexts bool) (stats applyStats, err error) {
	// Any failure leaves a transaction open or aborted: end it so that the
	// connection stays usable. What was loaded or folded ahead assumed b
	// would commit as planned: it goes too.
	defer func() {
		if err != nil {
			a.begun = nil
			a.cache.reset("")
			forgetAhead(next, after)
			if !a.conn.IsClosed() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				_, _ = a.conn.Exec(rctx, "ROLLBACK")
			}
		}
	}()
	// A lone batch whose users' state is cached begins, is fenced and
	// written in one round trip; any other first loads that state.
	fromCache := a.begun == nil && forcedReject == nil && a.cache.covers(b, a.replayUntil)
	var t *begunTx
	var plan *foldPlan
	if fromCache {
		t = &begunTx{b: b, fingerprint: a.cache.fp}
		plan = foldBatch(b, a.cache.loadedFor(b), nil, withTexts)
	} else {
		if t, err = a.beginFor(ctx, b, next); err != nil {
			return stats, err
		}
		if plan, err = a.planFor(ctx, t, forcedReject, withTexts); err != nil {
			return stats, err
		}
		if err := a.redact(ctx, plan.redact); err != nil {
			return stats, err
		}
	}
	// Fold next ahead, on the database's time.
	ahead := speculate(next, plan.states)
	q := &pgx.Batch{}
	if fromCache {
		q.Queue("BEGIN")
		q.Queue("SELECT pg_advisory_xact_lock($1)", int64(foldLockID))
		q.Queue(fenceSQL, a.slot, a.generation, lsnText(b.endLSN), a.cache.fp)
		q.Queue(unrejectedSQL, b.outboxIDs())
	}
	plan.queue(q)
	q.Queue("COMMIT")
	if next != nil {
		a.queueBegin(q, next, next.pre == nil, after)
	}
	br := a.conn.SendBatch(ctx, q)
	if fromCache {
		err = readCachedBegin(br)
	}
	if err == nil {
		stats, err = plan.read(br)
	}
	if plan == b.spec {
		stats.Ahead = 1
	}
	if err == nil {
		if _, cerr := br.Exec(); cerr != nil {
			err = fmt.Errorf("commit: %w", cerr)
		}
	}
	if err != nil {
		_ = br.Close()
		ahead.wait()
		return stats, err
	}
	// b has committed: what goes wrong from here on is next's to report.
	var nextTx *begunTx
	if next != nil {
		nextTx = a.readBegin(br, next, next.pre == nil, after)
	}
	if cerr := br.Close(); cerr != nil && nextTx != nil && nextTx.err == nil {
		nextTx.err = fmt.Errorf("begin apply: %w", cerr)
	}
	ahead.wait()
	a.begun = nextTx
	if nextTx == nil {
		a.cache.committed(t.fingerprint, plan, plan.forgotten)
	} else {
		// A backlog: batches go one round trip each without the cache,
		// which would cost copying every user's state for nothing.
		a.cache.reset("")
	}
	return stats, nil
}

// readCachedBegin reads the begin of a batch folded on cached state.
func readCachedBegin(br pgx.BatchResults) error {
	if _, err := br.Exec(); err != nil {
		return fmt.Errorf("begin apply: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		return fmt.Errorf("take fold lock: %w", err)
	}
	if _, err := readFence(br); err != nil {
		return err
	}
	switch _, err := br.Exec(); {
	case sqlState(err) == "UF002": // a change has a reject: fold on loaded state, which drops it
		return errStaleState
	case err != nil:
		return fmt.Errorf("look up rejects: %w", err)
	}
	return nil
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
func isObjectUnreadable(err error) bool { return sqlState(err) == "UA001" }

// sqlState is err's SQLSTATE, "" when it has none.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func pgMessage(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	return err.Error()
}
