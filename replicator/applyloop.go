package replicator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// batchQueue is what the applier has taken from the reader and not yet
// applied: full batches, and the one being filled.
type batchQueue struct {
	maxCount, maxBytes int
	sealed             []*batch
	filling            *batch
	inTx               bool // the last source transaction has not committed yet
}

func (q *batchQueue) fillingBatch() *batch {
	if q.filling == nil {
		q.filling = &batch{}
	}
	return q.filling
}

func (q *batchQueue) add(c change) {
	b := q.fillingBatch()
	b.add(c)
	if b.full(q.maxCount, q.maxBytes) {
		q.seal()
	}
}

func (q *batchQueue) commit(end uint64) {
	q.inTx = false
	q.fillingBatch().endLSN = end
}

func (q *batchQueue) seal() {
	if q.filling != nil {
		q.sealed = append(q.sealed, q.filling)
		q.filling = nil
	}
}

// fillingReady reports whether the batch being filled can be applied as it
// is: it ends on a transaction boundary and holds changes or a new position.
func (q *batchQueue) fillingReady(confirmed uint64) bool {
	b := q.filling
	return b != nil && !q.inTx && (len(b.changes) > 0 || b.endLSN > confirmed)
}

// ready reports whether a batch can be applied now.
func (q *batchQueue) ready(confirmed uint64) bool {
	return len(q.sealed) > 0 || q.fillingReady(confirmed)
}

// take removes and returns the batch to apply now, sealing the one being
// filled when it is that batch: once begun, a batch's content is fixed.
func (q *batchQueue) take(confirmed uint64) *batch {
	if len(q.sealed) == 0 && q.fillingReady(confirmed) {
		q.seal()
	}
	if len(q.sealed) == 0 {
		return nil
	}
	b := q.sealed[0]
	q.sealed[0] = nil
	q.sealed = q.sealed[1:]
	return b
}

// peek returns the batch that take would return k calls from now, without
// removing it, or nil when it is not ready.
func (q *batchQueue) peek(k int, confirmed uint64) *batch {
	if len(q.sealed) == k && q.fillingReady(confirmed) {
		q.seal()
	}
	if len(q.sealed) <= k {
		return nil
	}
	return q.sealed[k]
}

// idle reports whether nothing is received and unapplied.
func (q *batchQueue) idle() bool {
	return !q.inTx && len(q.sealed) == 0 && (q.filling == nil || (len(q.filling.changes) == 0 && q.filling.endLSN == 0))
}

// maxAhead is how many full batches the applier takes in beyond the one it
// applies, so that the next one's transaction can begin, and the state of
// the one after can load, in this one's round trip; it bounds the
// applier's memory to a few batches.
const maxAhead = 2

// applyLoop batches what the reader hands over and folds it: when a batch
// is full, or as soon as the stream has nothing more to give, so that a
// lone event is applied within milliseconds and a backlog in large batches.
func (s *streamer) applyLoop(ctx context.Context, items <-chan streamItem) error {
	pubCheck := time.NewTicker(s.interval)
	defer pubCheck.Stop()
	for {
		if s.queue.ready(s.confirmed.Load()) {
			open, err := s.gather(ctx, items)
			if err != nil {
				return s.stopOn(ctx, err)
			}
			if err := s.flushOne(ctx); err != nil {
				return s.stopOn(ctx, err)
			}
			if !open {
				return s.finish(ctx)
			}
			continue
		}
		select {
		case it, ok := <-items:
			if !ok {
				return s.finish(ctx)
			}
			if err := s.take(ctx, it); err != nil {
				return s.stopOn(ctx, err)
			}
		case <-pubCheck.C:
			if err := s.checkPublication(ctx); err != nil {
				return s.stopOn(ctx, err)
			}
		case <-ctx.Done():
			return s.finish(ctx)
		}
	}
}

// checkPublication ends the session when the publication is no longer the
// one it started with: rows committed while it was dropped, or while the
// outbox was out of it, are never streamed, and the stream gives no sign
// of it. The next session finds the change and recreates the slot, whose
// catch-up folds them. It runs while nothing is being applied.
func (s *streamer) checkPublication(ctx context.Context) error {
	if s.app.begun != nil || s.publication == "" {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	now, err := publicationIdentity(cctx, s.app.conn, s.cfg.Publication)
	if err != nil {
		return err
	}
	if now != s.publication {
		return fmt.Errorf("publication %s changed while streaming (dropped, or neon_auth.outbox taken out of it): rows committed meanwhile are not streamed; starting again to recreate the slot and fold them", s.cfg.Publication)
	}
	return nil
}

// gather takes in what the reader has already handed over, without waiting,
// until maxAhead full batches wait; open is false once the reader is done.
func (s *streamer) gather(ctx context.Context, items <-chan streamItem) (open bool, err error) {
	for len(s.queue.sealed) <= maxAhead {
		select {
		case it, ok := <-items:
			if !ok {
				return false, nil
			}
			if err := s.take(ctx, it); err != nil {
				return true, err
			}
		default:
			return true, nil
		}
	}
	return true, nil
}

// stopOn ends the loop on err: it returns err so that the session
// restarts, or on shutdown nil — an apply that failed then (cut off after
// shutdownGrace, say) is applied again by the next start, and trying the
// rest now would only add to the wait.
func (s *streamer) stopOn(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		s.logger.Warn("stopping with events received but not applied; the next start applies them", "error", err)
		return nil
	}
	return err
}

// take files one item from the reader.
func (s *streamer) take(ctx context.Context, it streamItem) error {
	s.budget.Release(it.weight)
	switch it.kind {
	case itemKeepalive:
		s.idleAdvance(it)
	case itemBegin:
		s.queue.inTx = true
	case itemChange:
		s.queue.add(it.change)
	case itemCommit:
		s.queue.commit(uint64(it.endLSN))
	case itemTruncate:
		s.logger.Warn("neon_auth.outbox was truncated; users_sync keeps what was folded")
	}
	return nil
}

// idleAdvance lets the confirmed position follow the server's WAL end while
// nothing is pending, so an idle outbox never pins WAL that the rest of the
// database (our own writes included) keeps producing.
func (s *streamer) idleAdvance(it streamItem) {
	if !s.queue.idle() || uint64(it.serverWALEnd) <= s.confirmed.Load() {
		return
	}
	s.confirmed.Store(uint64(it.serverWALEnd))
	if it.replyRequested {
		if err := s.sendStatus(false); err != nil {
			s.logger.Debug("status update after idle advance failed", "error", err)
		}
	}
}

// flushOne applies the next batch in one transaction, beginning the one
// after it (when it is ready) in the same round trip. A batch that ends
// inside a large source transaction leaves the checkpoint at the last
// complete one; replayed after a crash, its part already applied is
// skipped.
func (s *streamer) flushOne(ctx context.Context) error {
	b := s.queue.take(s.confirmed.Load())
	if b == nil {
		return nil
	}
	next, after := s.queue.peek(0, s.confirmed.Load()), s.queue.peek(1, s.confirmed.Load())
	if len(b.changes) > 0 {
		// Shutdown stops the intake, not an apply under way: cancelling it
		// could leave its COMMIT in doubt. A deadline still bounds it. But
		// when the reader found the connection dead (a partition holds the
		// answer back too) the session is over: the apply is abandoned, and
		// the next session skips what it may have committed.
		// On shutdown (ctx done) it gets shutdownGrace more, as finish's
		// applies do, and no longer: one blocked on a lock would otherwise
		// hold the process for the whole applyTimeout. Cut off in doubt, it
		// is replayed by the next start, like any apply a crash interrupts.
		deadline := time.Now().Add(applyTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		actx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		stopAbandon := context.AfterFunc(s.readerDone, cancel)
		stopShutdown := context.AfterFunc(ctx, func() { time.AfterFunc(shutdownGrace, cancel) })
		began := time.Now()
		stats, err := s.app.apply(actx, b, next, after)
		stopAbandon()
		stopShutdown()
		cancel()
		if cause := context.Cause(s.readerDone); err != nil && cause != nil {
			return fmt.Errorf("apply abandoned: %w", cause) // the reader's error says why
		}
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		stats = reportBatch(s.cfg.Observer, stats, len(b.changes), time.Since(began), false)
		s.total.add(stats)
		s.logger.Debug("applied batch", "events", len(b.changes), "folded", stats.Folded,
			"rejected", stats.Rejected, "skipped", stats.Skipped, "folded_ahead", stats.Ahead > 0, "checkpoint", pglogrepl.LSN(b.endLSN).String(),
			"took", time.Since(began).String())
	}
	if b.endLSN > s.confirmed.Load() {
		s.confirmed.Store(b.endLSN)
	}
	return nil
}

// shutdownGrace bounds the applies of a shutdown: what was received is
// applied within it, or left to be streamed again at the next start.
const shutdownGrace = 10 * time.Second

// finish applies what was received; it runs on shutdown and when the
// reader stops.
func (s *streamer) finish(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	s.queue.inTx = false // a partial transaction is applied as a chunk; its end is not recorded
	for s.queue.ready(s.confirmed.Load()) {
		if err := s.flushOne(fctx); err != nil {
			return err
		}
	}
	return nil
}
