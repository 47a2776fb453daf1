package audit

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
)

// The stored users, in two keyset-paged halves: those with a users_sync row
// (and maybe registers), and those with registers only.
const (
	storedWithRowSQL = `SELECT u.id, ` + stateColumns + `
		FROM neon_auth.users_sync u LEFT JOIN neon_auth.users_sync_state s ON s.user_id = u.id
		WHERE u.id > $1 ORDER BY u.id LIMIT $2`
	storedRegistersOnlySQL = `SELECT s.user_id, ` + stateColumns + `
		FROM neon_auth.users_sync_state s LEFT JOIN neon_auth.users_sync u ON u.id = s.user_id
		WHERE s.user_id > $1 AND u.id IS NULL ORDER BY s.user_id LIMIT $2`
	winnersSQL = `SELECT ` + outboxColumns + ` FROM neon_auth.outbox o WHERE o.id = ANY($1::int8[])`
)

// storedUser is a user as users_sync and users_sync_state hold it.
type storedUser struct {
	id  string
	got userState
}

// comparePass compares every stored user of partition p, then every user
// the fold has that nothing is stored for.
func (v *verifier) comparePass(ctx context.Context, tx pgx.Tx, p, passes int, keys map[string]*regKeys, forgotten map[string]bool) error {
	for _, q := range []string{storedWithRowSQL, storedRegistersOnlySQL} {
		after := ""
		for {
			page, last, n, err := v.readStored(ctx, tx, q, after, p, passes)
			if err != nil {
				return err
			}
			if err := v.compareUsers(ctx, tx, page, keys, forgotten); err != nil {
				return err
			}
			if n < v.cfg.PageSize {
				break
			}
			after = last
		}
	}
	missing := make([]string, 0, len(keys))
	for id := range keys {
		missing = append(missing, id)
	}
	slices.Sort(missing)
	for chunk := range slices.Chunk(missing, v.cfg.PageSize) {
		page := make([]storedUser, len(chunk))
		for i, id := range chunk {
			page[i] = storedUser{id: id}
		}
		if err := v.compareUsers(ctx, tx, page, keys, forgotten); err != nil {
			return err
		}
	}
	return nil
}

// readStored reads one page of stored users and keeps those of partition p;
// it returns the last id read and how many rows the page had.
func (v *verifier) readStored(ctx context.Context, tx pgx.Tx, q, after string, p, passes int) ([]storedUser, string, int, error) {
	rows, err := tx.Query(ctx, q, after, v.cfg.PageSize)
	if err != nil {
		return nil, "", 0, fmt.Errorf("read users_sync: %w", err)
	}
	defer rows.Close()
	var page []storedUser
	n := 0
	for rows.Next() {
		var u storedUser
		if u.got, err = scanUserState(rows, &u.id); err != nil {
			return nil, "", 0, fmt.Errorf("read users_sync: %w", err)
		}
		n++
		after = u.id
		if partition(u.id, passes) == p {
			page = append(page, u)
		}
	}
	return page, after, n, rows.Err()
}

// compareUsers compares each user of page with the fold of the user's
// winning events, read back from the outbox, and forgets them from keys.
func (v *verifier) compareUsers(ctx context.Context, tx pgx.Tx, page []storedUser, keys map[string]*regKeys, forgotten map[string]bool) error {
	if len(page) == 0 {
		return nil
	}
	var ids []int64
	for _, u := range page {
		if k := keys[u.id]; k != nil && !forgotten[u.id] {
			ids = append(ids, winnerIDs(k)...)
		}
	}
	events, err := readEvents(ctx, tx, ids)
	if err != nil {
		return err
	}
	for _, u := range page {
		var want outbox.State
		if k := keys[u.id]; k != nil && !forgotten[u.id] {
			if want, err = foldWinners(k, events); err != nil {
				return err
			}
		}
		delete(keys, u.id)
		v.report.Users++
		if err := v.emit(userDifferences(u.id, want, u.got)...); err != nil {
			return err
		}
	}
	return nil
}

func winnerIDs(k *regKeys) []int64 {
	var ids []int64
	if !k.profile.IsZero() {
		ids = append(ids, k.profile.OutboxID)
	}
	if k.last.OutboxID != k.profile.OutboxID {
		ids = append(ids, k.last.OutboxID)
	}
	return ids
}

// foldWinners is the fold of a user's events, computed from the winning
// event of each register: the others cannot change the result.
func foldWinners(k *regKeys, events map[int64]*outbox.Event) (outbox.State, error) {
	var st outbox.State
	for _, id := range winnerIDs(k) {
		ev := events[id]
		if ev == nil {
			return st, fmt.Errorf("outbox row %d, a winning event, vanished while verifying", id)
		}
		st, _ = outbox.Fold(st, *ev)
	}
	return st, nil
}

// readEvents reads and decodes the outbox rows ids.
func readEvents(ctx context.Context, q pgx.Tx, ids []int64) (map[int64]*outbox.Event, error) {
	out := make(map[int64]*outbox.Event, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, winnersSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("read winning events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("read winning events: %w", err)
		}
		ev, err := outbox.Decode(rec)
		if err != nil {
			return nil, fmt.Errorf("outbox row %d no longer decodes: %w", rec.ID, err)
		}
		out[rec.ID] = &ev
	}
	return out, rows.Err()
}
