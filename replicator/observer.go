package replicator

import (
	"time"

	"github.com/usersync/usersync/outbox"
)

// Observer is told what the replicator does, for metrics and readiness. Its
// methods are called from the replicator's goroutines, one at a time per
// method, and must return quickly: they run on the apply path.
type Observer interface {
	// BatchApplied is called after each apply transaction committed.
	BatchApplied(b BatchStats)
	// SlotHeld is called with true when this instance starts streaming from
	// the slot (it is then the active instance), and with false when that
	// session ends.
	SlotHeld(held bool)
	// CaughtUp is called when the session holding the slot has finished the
	// catch-up it owed, if any, and streams.
	CaughtUp()
	// SessionEnded is called after each session with what ended it:
	// ErrSlotBusy while standing by, nil on shutdown, else the error the
	// replicator reconnects after.
	SessionEnded(err error)
}

// BatchStats is what one apply transaction did.
type BatchStats struct {
	// Events is the number of outbox records in the batch.
	Events int
	// Applied counts the history rows written, by operation.
	Applied map[outbox.Operation]int
	// Rejected counts the outbox_rejects rows written.
	Rejected int
	// Skipped counts records already accounted for (a replay).
	Skipped int
	// Duration is how long the apply took, commit included.
	Duration time.Duration
	// CatchUp is true for a batch of the catch-up, false for the stream.
	CatchUp bool
	// SourceCommits are the source transactions' commit times of the
	// streamed events applied (not skipped), one per event.
	SourceCommits []time.Time
	// CommittedAt is when the apply transaction committed.
	CommittedAt time.Time
}

// nopObserver is the default Observer: it does nothing.
type nopObserver struct{}

func (nopObserver) BatchApplied(BatchStats) {}
func (nopObserver) SlotHeld(bool)           {}
func (nopObserver) CaughtUp()               {}
func (nopObserver) SessionEnded(error)      {}

var _ Observer = nopObserver{}

// reportBatch tells obs about a committed batch of n records and returns
// stats without the per-event commit times, which a session's running
// total must not accumulate.
func reportBatch(obs Observer, stats applyStats, n int, took time.Duration, catchUp bool) applyStats {
	obs.BatchApplied(BatchStats{
		Events: n, Applied: stats.ops, Rejected: stats.Rejected, Skipped: stats.Skipped,
		Duration: took, CatchUp: catchUp, SourceCommits: stats.commits, CommittedAt: time.Now(),
	})
	stats.commits = nil
	return stats
}
