package outbox

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// foldBase is the time the fold tests' events are offset from.
var foldBase = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// foldEvent builds a decoded event for user at foldBase+sec. Profile events
// carry name as their name and email; every event's Object names it, so
// raw_json shows which event won.
func foldEvent(typ, user string, outboxID int64, sec int, name string) Event {
	at := foldBase.Add(time.Duration(sec) * time.Second)
	ev := Event{OutboxID: outboxID, Provider: ProviderGeneric, Type: typ, UserID: user, OccurredAt: at}
	if typ == TypeDeleted {
		ev.Object = []byte(fmt.Sprintf(`{"id":%q,"deleted":true,"outbox":%d}`, user, outboxID))
		return ev
	}
	email := name + "@example.org"
	ev.Profile = Profile{Name: &name, Email: &email, CreatedAt: &foldBase, UpdatedAt: &at}
	ev.Object = []byte(fmt.Sprintf(`{"id":%q,"name":%q,"outbox":%d}`, user, name, outboxID))
	return ev
}

// wantRow builds the row that profile event p (nil for a tombstone) and a
// deleted_at at foldBase+deletedSec (negative: null) should give; a tombstone
// shows deleteObject as raw_json.
func wantRow(user string, p *Event, deletedSec int, tombstone *Event) *Row {
	r := &Row{ID: user}
	if p != nil {
		r.Name, r.Email = p.Profile.Name, p.Profile.Email
		r.CreatedAt, r.UpdatedAt = p.Profile.CreatedAt, p.Profile.UpdatedAt
		r.RawJSON = p.Object
	} else if tombstone != nil {
		r.RawJSON = tombstone.Object
	}
	if deletedSec >= 0 {
		r.DeletedAt = someTime(foldBase.Add(time.Duration(deletedSec) * time.Second))
	}
	return r
}

func keysEqual(a, b Key) bool { return a.At.Equal(b.At) && a.OutboxID == b.OutboxID }

func TestFold_Rules(t *testing.T) {
	t.Parallel()
	created1 := foldEvent(TypeCreated, "u", 1, 1, "one")
	updated3 := foldEvent(TypeUpdated, "u", 3, 3, "three")
	updated2 := foldEvent(TypeUpdated, "u", 2, 2, "two")
	sameTimeLow := foldEvent(TypeUpdated, "u", 5, 3, "low")
	sameTimeHigh := foldEvent(TypeUpdated, "u", 6, 3, "high")
	deleted2 := foldEvent(TypeDeleted, "u", 20, 2, "")
	deleted4 := foldEvent(TypeDeleted, "u", 40, 4, "")
	created5 := foldEvent(TypeCreated, "u", 50, 5, "again")
	imported := &Row{ID: "u", Name: someString("imported"), DeletedAt: someTime(foldBase), RawJSON: []byte(`{"imported":true}`)}
	tests := []struct {
		name     string
		start    State
		events   []Event
		wantOps  []Operation
		want     *Row
		wantProf Key
		wantLast Key
	}{
		{"insert", State{}, []Event{created1}, []Operation{OpInsert},
			wantRow("u", &created1, -1, nil), created1.Key(), created1.Key()},
		{"newer update", State{}, []Event{created1, updated3}, []Operation{OpInsert, OpUpdate},
			wantRow("u", &updated3, -1, nil), updated3.Key(), updated3.Key()},
		{"older update is stale", State{}, []Event{updated3, created1}, []Operation{OpInsert, OpStale},
			wantRow("u", &updated3, -1, nil), updated3.Key(), updated3.Key()},
		{"redelivery is stale", State{}, []Event{created1, created1}, []Operation{OpInsert, OpStale},
			wantRow("u", &created1, -1, nil), created1.Key(), created1.Key()},
		{"same time: higher outbox id wins", State{}, []Event{sameTimeLow, sameTimeHigh}, []Operation{OpInsert, OpUpdate},
			wantRow("u", &sameTimeHigh, -1, nil), sameTimeHigh.Key(), sameTimeHigh.Key()},
		{"same time: lower outbox id is stale", State{}, []Event{sameTimeHigh, sameTimeLow}, []Operation{OpInsert, OpStale},
			wantRow("u", &sameTimeHigh, -1, nil), sameTimeHigh.Key(), sameTimeHigh.Key()},
		{"delete keeps the profile", State{}, []Event{created1, deleted2}, []Operation{OpInsert, OpDelete},
			wantRow("u", &created1, 2, nil), created1.Key(), deleted2.Key()},
		{"delete older than the last update is stale", State{}, []Event{created1, updated3, deleted2},
			[]Operation{OpInsert, OpUpdate, OpStale}, wantRow("u", &updated3, -1, nil), updated3.Key(), updated3.Key()},
		{"older update after a delete fills the profile, stays deleted", State{}, []Event{created1, deleted4, updated3},
			[]Operation{OpInsert, OpDelete, OpUpdate}, wantRow("u", &updated3, 4, nil), updated3.Key(), deleted4.Key()},
		{"update newer than a delete undeletes", State{}, []Event{created1, deleted2, updated3},
			[]Operation{OpInsert, OpDelete, OpUpdate}, wantRow("u", &updated3, -1, nil), updated3.Key(), updated3.Key()},
		{"tombstone for an unknown user", State{}, []Event{deleted2}, []Operation{OpDelete},
			wantRow("u", nil, 2, &deleted2), Key{}, deleted2.Key()},
		{"tombstone then older profile fills in", State{}, []Event{deleted2, created1}, []Operation{OpDelete, OpUpdate},
			wantRow("u", &created1, 2, nil), created1.Key(), deleted2.Key()},
		{"tombstone shows the newest delete", State{}, []Event{deleted2, deleted4}, []Operation{OpDelete, OpDelete},
			wantRow("u", nil, 4, &deleted4), Key{}, deleted4.Key()},
		{"older delete on a tombstone is stale", State{}, []Event{deleted4, deleted2}, []Operation{OpDelete, OpStale},
			wantRow("u", nil, 4, &deleted4), Key{}, deleted4.Key()},
		{"re-create after delete", State{}, []Event{created1, deleted4, created5},
			[]Operation{OpInsert, OpDelete, OpUpdate}, wantRow("u", &created5, -1, nil), created5.Key(), created5.Key()},
		{"imported row loses to an update", State{Row: imported}, []Event{updated2}, []Operation{OpUpdate},
			wantRow("u", &updated2, -1, nil), updated2.Key(), updated2.Key()},
		{"imported row loses to a delete", State{Row: imported}, []Event{deleted2}, []Operation{OpDelete},
			wantRow("u", nil, 2, &deleted2), Key{}, deleted2.Key()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := tt.start
			for i, ev := range tt.events {
				var op Operation
				st, op = Fold(st, ev)
				if op != tt.wantOps[i] {
					t.Errorf("event %d (%s, outbox %d): op = %s, want %s", i, ev.Type, ev.OutboxID, op, tt.wantOps[i])
				}
			}
			if !RowsEqual(st.Row, tt.want) {
				t.Errorf("row = %s\nwant  %s", st.Row.JSON(), tt.want.JSON())
			}
			if !keysEqual(st.Profile, tt.wantProf) || !keysEqual(st.Last, tt.wantLast) {
				t.Errorf("registers = %+v / %+v, want %+v / %+v", st.Profile, st.Last, tt.wantProf, tt.wantLast)
			}
		})
	}
}

func TestFold_StaleKeepsState(t *testing.T) {
	t.Parallel()
	st, _ := Fold(State{}, foldEvent(TypeUpdated, "u", 2, 2, "two"))
	got, op := Fold(st, foldEvent(TypeDeleted, "u", 1, 1, ""))
	if op != OpStale || got.Row != st.Row || got.Profile != st.Profile || got.Last != st.Last {
		t.Fatalf("Fold = %+v, %s; want the same state, stale", got, op)
	}
}

func TestFold_DoesNotMutateInput(t *testing.T) {
	t.Parallel()
	for _, ev := range []Event{
		foldEvent(TypeUpdated, "u", 9, 9, "nine"),
		foldEvent(TypeDeleted, "u", 9, 9, ""),
	} {
		t.Run(ev.Type, func(t *testing.T) {
			t.Parallel()
			st, _ := Fold(State{}, foldEvent(TypeCreated, "u", 1, 1, "one"))
			st, _ = Fold(st, foldEvent(TypeDeleted, "u", 2, 2, ""))
			before, beforeJSON, beforeState := st.Row, string(st.Row.JSON()), st
			next, _ := Fold(st, ev)
			if next.Row == before {
				t.Error("Fold returned the input Row")
			}
			if string(before.JSON()) != beforeJSON || st != beforeState {
				t.Errorf("input changed: %s, want %s", before.JSON(), beforeJSON)
			}
		})
	}
}

// oracleFold computes, straight from the spec, what a user's set of events
// must fold to: the profile of the greatest created/updated event (or, with
// none, the newest delete's object), and deleted_at iff the greatest event is
// a delete.
func oracleFold(evs []Event) State {
	var prof, last *Event
	for i := range evs {
		e := &evs[i]
		if last == nil || last.Key().Less(e.Key()) {
			last = e
		}
		if e.Type != TypeDeleted && (prof == nil || prof.Key().Less(e.Key())) {
			prof = e
		}
	}
	if last == nil {
		return State{}
	}
	st := State{Last: last.Key(), Row: &Row{ID: last.UserID, RawJSON: last.Object}}
	if prof != nil {
		st.Profile = prof.Key()
		st.Row.Name, st.Row.Email = prof.Profile.Name, prof.Profile.Email
		st.Row.CreatedAt, st.Row.UpdatedAt = prof.Profile.CreatedAt, prof.Profile.UpdatedAt
		st.Row.RawJSON = prof.Object
	}
	if last.Type == TypeDeleted {
		st.Row.DeletedAt = &last.OccurredAt
	}
	return st
}

// randomEvents makes n events for user with outbox ids drawn from ids. Their
// times collide often (three possible seconds), so the outbox id tiebreak
// decides many orders.
func randomEvents(rng *rand.Rand, user string, n int, ids []int64) []Event {
	types := []string{TypeCreated, TypeUpdated, TypeDeleted}
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = foldEvent(types[rng.IntN(3)], user, ids[i], rng.IntN(3), fmt.Sprintf("n%d", rng.IntN(4)))
	}
	return evs
}

// permutations calls f with every ordering of evs (Heap's algorithm).
func permutations(evs []Event, f func([]Event)) {
	p := append([]Event(nil), evs...)
	c := make([]int, len(p))
	f(p)
	for i := 0; i < len(p); {
		if c[i] < i {
			j := 0
			if i%2 == 1 {
				j = c[i]
			}
			p[j], p[i] = p[i], p[j]
			f(p)
			c[i]++
			i = 0
		} else {
			c[i] = 0
			i++
		}
	}
}

func foldAll(st State, evs []Event) State {
	for _, ev := range evs {
		st, _ = Fold(st, ev)
	}
	return st
}

// sameState reports whether two states hold equal rows and registers.
func sameState(a, b State) bool {
	return RowsEqual(a.Row, b.Row) && keysEqual(a.Profile, b.Profile) && keysEqual(a.Last, b.Last)
}

// TestFold_EveryPermutation is the fold's defining property: any order of a
// user's events gives the same row, the one the spec derives from the set.
func TestFold_EveryPermutation(t *testing.T) {
	t.Parallel()
	imported := &Row{ID: "u", Name: someString("imported"), RawJSON: []byte(`{}`)}
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 1))
		n := 1 + rng.IntN(6)
		ids := rng.Perm(50)[:n]
		outboxIDs := make([]int64, n)
		for i, id := range ids {
			outboxIDs[i] = int64(id) + 1
		}
		evs := randomEvents(rng, "u", n, outboxIDs)
		want := oracleFold(evs)
		permutations(evs, func(order []Event) {
			for _, start := range []State{{}, {Row: imported}} {
				got := foldAll(start, order)
				if !sameState(got, want) {
					t.Fatalf("seed %d: order %v folds to %s %+v %+v, want %s %+v %+v", seed, describe(order),
						got.Row.JSON(), got.Profile, got.Last, want.Row.JSON(), want.Profile, want.Last)
				}
				// Folding any event again changes nothing.
				if again, op := Fold(got, order[0]); op != OpStale || !sameState(again, got) {
					t.Fatalf("seed %d: refolding outbox %d gave %s", seed, order[0].OutboxID, op)
				}
			}
		})
	}
}

// TestFold_InterleavedUsers shuffles the events of several users together,
// as the stream sees them, and folds each into its own user's state.
func TestFold_InterleavedUsers(t *testing.T) {
	t.Parallel()
	users := []string{"a", "b", "c"}
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 2))
		ids := rng.Perm(1000)
		var all []Event
		want := map[string]State{}
		for _, u := range users {
			n := rng.IntN(5)
			outboxIDs := make([]int64, n)
			for i := range outboxIDs {
				outboxIDs[i] = int64(ids[0]) + 1
				ids = ids[1:]
			}
			evs := randomEvents(rng, u, n, outboxIDs)
			want[u] = oracleFold(evs)
			all = append(all, evs...)
		}
		for range 50 {
			rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
			got := map[string]State{}
			for _, ev := range all {
				got[ev.UserID], _ = Fold(got[ev.UserID], ev)
			}
			for _, u := range users {
				if !sameState(got[u], want[u]) {
					t.Fatalf("seed %d user %s: got %s, want %s", seed, u, got[u].Row.JSON(), want[u].Row.JSON())
				}
			}
		}
	}
}

// describe lists events compactly for failure messages.
func describe(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%s@%s#%d", e.Type, e.OccurredAt.Format("05"), e.OutboxID)
	}
	return out
}
