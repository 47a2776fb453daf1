package replicator

import "github.com/usersync/usersync/outbox"

// Folding ahead. The round trip that commits batch N begins N+1's
// transaction and loads the state of N+2's users (N+2.pre), in N+1's
// transaction, after its fold lock: the state as N left it. While the
// database works on N+1, N+2 is folded on that state overlaid with what N+1
// leaves (N+2.spec). When N+2's transaction begins, the fold done ahead is
// used if no one else wrote fold state in between — nobody can while a
// transaction of this applier holds the fold lock, and between two of them
// any writer changes the fingerprint that the checkpoint compare-and-set
// returns (resync and forget bump external_epoch; another slot's applier
// rewrites its checkpoint row). Otherwise, and whenever a batch fails, what
// was loaded or folded ahead is dropped and loaded again.

// preload is the state of a batch's users loaded ahead, and the fingerprint
// of the begin it was loaded in.
type preload struct {
	fingerprint string
	loaded
}

// specFold is a fold running ahead.
type specFold struct{ done chan struct{} }

// speculate folds next ahead on next.pre overlaid with prev, the state of
// the users of the batch before as its fold left it. It runs on its own
// goroutine, alongside the round trip of the batch before; wait joins it.
func speculate(next *batch, prev map[string]*outbox.State) specFold {
	if next == nil || next.pre == nil {
		return specFold{}
	}
	f := specFold{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		ld := next.pre.loaded
		states := make(map[string]*outbox.State, len(ld.states))
		for _, id := range next.userIDs() {
			if st, ok := prev[id]; ok {
				states[id] = st
			} else if st, ok := ld.states[id]; ok {
				states[id] = st
			}
		}
		ld.states = states
		next.spec = foldBatch(next, &ld, nil, false)
	}()
	return f
}

func (f specFold) wait() {
	if f.done != nil {
		<-f.done
	}
}

// forgetAhead drops what was loaded or folded ahead for bs.
func forgetAhead(bs ...*batch) {
	for _, b := range bs {
		if b != nil {
			b.pre, b.spec = nil, nil
		}
	}
}
