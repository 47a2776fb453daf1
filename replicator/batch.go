package replicator

import (
	"errors"

	"github.com/usersync/usersync/outbox"
)

// change is one outbox row decoded where it was read (the stream's reader,
// the catch-up's reader), so that decoding overlaps the apply of the batch
// before it.
type change struct {
	src    sourceRecord
	ev     outbox.Event // valid when reject is empty
	reject string       // why the row cannot be folded
}

// decodeChange validates and maps src; a malformed row becomes a reject.
func decodeChange(src sourceRecord) change {
	ev, err := outbox.Decode(src.Record)
	if err != nil {
		var rej *outbox.RejectError
		if errors.As(err, &rej) {
			return change{src: src, reject: rej.Reason}
		}
		return change{src: src, reject: err.Error()}
	}
	return change{src: src, ev: ev}
}

// size approximates the memory a change holds until its batch commits: the
// payload (the user object is a slice of it), its copy in the apply's
// parameters, and fixed overhead.
func (c *change) size() int { return 2*len(c.src.Payload) + 512 }

// batch is changes folded in one apply transaction.
type batch struct {
	changes []change
	bytes   int
	// endLSN is the end of the last complete source transaction in the
	// batch, where the checkpoint moves when it commits; 0 when the batch
	// holds only part of one transaction (a chunk of a large one).
	endLSN uint64
	// pre and spec are the state loaded and the fold done ahead
	// (speculate.go); nil when there are none.
	pre  *preload
	spec *foldPlan
}

func (b *batch) add(c change) {
	b.changes = append(b.changes, c)
	b.bytes += c.size()
}

func (b *batch) full(maxCount, maxBytes int) bool {
	return len(b.changes) >= maxCount || b.bytes >= maxBytes
}
