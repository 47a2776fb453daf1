package outbox

// Fold applies one event to a user's state and reports what it did.
//
// The state is two last-writer-wins registers ordered by Key: the profile
// (name, email, created_at, updated_at, raw_json) comes from the greatest
// user.created/user.updated event, and deleted_at is set iff the greatest event
// of all is a user.deleted. So the resulting row depends only on the set of
// events folded, never on their order: webhooks arrive late, twice and out of
// order, and backfill, replay and streaming interleave.
//
// A user.deleted for a user with no profile leaves a tombstone whose raw_json
// is the delete's object; an older profile event folded later fills it in. A
// row with zero registers (imported data, say) loses to any event.
//
// Fold does not modify st or st.Row; the returned state has a new Row, so the
// caller can record both in history. ev.UserID is assumed to be st's user.
func Fold(st State, ev Event) (State, Operation) {
	key := ev.Key()
	deleted := ev.Type == TypeDeleted
	wonProfile := !deleted && newer(key, st.Profile)
	wonLast := newer(key, st.Last)
	if !wonProfile && !wonLast {
		return st, OpStale
	}
	next := State{Profile: st.Profile, Last: st.Last, RawFrom: st.RawFrom, Row: &Row{ID: ev.UserID}}
	if st.Row != nil {
		*next.Row = *st.Row
	}
	if wonProfile {
		p := ev.Profile
		next.Row.Name, next.Row.Email = p.Name, p.Email
		next.Row.CreatedAt, next.Row.UpdatedAt = p.CreatedAt, p.UpdatedAt
		next.Row.RawJSON = ev.Object
		next.RawFrom = ev.OutboxID
		next.Profile = key
	}
	if wonLast {
		next.Last = key
		next.Row.DeletedAt = nil
		if deleted {
			at := ev.OccurredAt
			next.Row.DeletedAt = &at
		}
		if deleted && next.Profile.IsZero() {
			// A tombstone shows the newest delete and nothing older: with
			// no profile register, any other content is imported data,
			// which loses to every event.
			next.Row = &Row{ID: next.Row.ID, DeletedAt: next.Row.DeletedAt, RawJSON: ev.Object}
			next.RawFrom = ev.OutboxID
		}
	}
	return next, operation(st.Row == nil, deleted)
}

// newer reports whether key wins a register currently holding reg.
func newer(key, reg Key) bool { return reg.IsZero() || reg.Less(key) }

// operation names a fold that changed a register, for users_sync_history.
func operation(hadNoRow, deleted bool) Operation {
	switch {
	case deleted:
		return OpDelete
	case hadNoRow:
		return OpInsert
	default:
		return OpUpdate
	}
}
