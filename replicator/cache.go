package replicator

import "github.com/usersync/usersync/outbox"

// stateCache is users' fold state as this applier's committed transactions
// left it, kept while the applier holds the fence: a lone batch whose users
// are all here needs no load, and costs one round trip instead of two (in
// a backlog, batches already cost one each, and the cache is let go). It
// is good only while nobody else writes fold state, which the fence checks
// in the batch's own transaction: the fingerprint it expects (fp) is that of
// the begin the state was last confirmed in, and the fence fails (UF002)
// before anything is written if it changed; the cache is then dropped.
type stateCache struct {
	fp     string // "" when the cache holds nothing trustworthy
	states map[string]*outbox.State
}

// stateCacheMax bounds the users kept (a few hundred bytes each): past it,
// half are let go.
const stateCacheMax = 20000

// reset empties the cache; fp is the fingerprint its next entries hold under.
func (c *stateCache) reset(fp string) {
	c.fp, c.states = fp, make(map[string]*outbox.State)
}

// covers reports whether b can be folded on the cache alone: every user of
// its changes is cached, and it has no reject (whose payload may name a
// forgotten user) and no change that may be a replay (those are looked up).
func (c *stateCache) covers(b *batch, replayUntil uint64) bool {
	if c.fp == "" || len(b.possibleReplays(replayUntil)) > 0 {
		return false
	}
	for i := range b.changes {
		ch := &b.changes[i]
		if ch.reject != "" {
			return false
		}
		if _, ok := c.states[ch.ev.UserID]; !ok {
			return false
		}
	}
	return true
}

// loadedFor is b's users' state from the cache, in a map of its own for
// the fold to update. Cached users are not forgotten: forget changes the
// fingerprint.
func (c *stateCache) loadedFor(b *batch) *loaded {
	states := make(map[string]*outbox.State, len(b.changes))
	for i := range b.changes {
		id := b.changes[i].ev.UserID
		states[id] = c.states[id]
	}
	return &loaded{states: states}
}

// committed records what a committed batch left: the state of its users,
// under fp, the fingerprint its transaction began with.
func (c *stateCache) committed(fp string, p *foldPlan, forgotten map[string]bool) {
	if fp != c.fp || c.states == nil {
		c.reset(fp)
	}
	for id, st := range p.states {
		if !forgotten[id] {
			c.states[id] = withoutObject(st)
		}
	}
	if len(c.states) > stateCacheMax {
		n := 0
		for id := range c.states { // map order: a random half
			if n++; n > stateCacheMax/2 {
				break
			}
			delete(c.states, id)
		}
	}
}

// withoutObject is st without the user object, which a folded row holds as
// a slice of its event's payload: kept, it would keep the whole payload. The
// fold never reads it back (the object is in users_sync by then).
func withoutObject(st *outbox.State) *outbox.State {
	if st.Row == nil || st.Row.RawJSON == nil {
		return st
	}
	c, r := *st, *st.Row
	r.RawJSON = nil
	c.Row = &r
	return &c
}
