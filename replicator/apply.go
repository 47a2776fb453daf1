package replicator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/usersync/usersync/outbox"
)

// applier folds batches of outbox records, each batch in one transaction that
// also advances the checkpoint. It costs two round trips per batch whatever
// its size: one to lock the checkpoint and load what the fold needs, one to
// write the results and commit.
type applier struct {
	conn       *pgx.Conn
	slot       string
	generation int64
}

// applyStats counts what one apply did.
type applyStats struct {
	Folded   int                      // history rows written (stale included)
	Rejected int                      // outbox_rejects rows written
	Skipped  int                      // records already accounted for (a replay)
	ops      map[outbox.Operation]int // history rows by operation (observer.go)
	commits  []time.Time              // source commit times of streamed events folded
}

func (s *applyStats) add(o applyStats) {
	s.Folded += o.Folded
	s.Rejected += o.Rejected
	s.Skipped += o.Skipped
	for op, n := range o.ops {
		if s.ops == nil {
			s.ops = make(map[outbox.Operation]int)
		}
		s.ops[op] += n
	}
	s.commits = append(s.commits, o.commits...)
}

// pendingReject is a record that cannot be folded, with the reason.
type pendingReject struct {
	src    *sourceRecord
	reason string
}

// foldInput is a batch after decoding, outside any transaction.
type foldInput struct {
	events  []outbox.Event // parallel to eventSrc
	evSrc   []*sourceRecord
	rejects []pendingReject
	userIDs []string
	ids     []int64
	// forgotten and redact: see forgotten.go.
	forgotten map[string]bool
	redact    []redaction
}

// historyEntry is one users_sync_history row to write.
type historyEntry struct {
	ev            *outbox.Event
	src           *sourceRecord
	op            outbox.Operation
	before, after *outbox.Row
}

// apply folds recs and moves the checkpoint to endLSN (0 leaves it where it
// is: a chunk of a transaction not yet complete). If the database refuses
// the batch's data, it retries record by record so that only the record at
// fault becomes a reject and nothing blocks the stream.
func (a *applier) apply(ctx context.Context, recs []sourceRecord, endLSN uint64) (applyStats, error) {
	stats, err := a.applyOnce(ctx, decodeBatch(recs, nil), endLSN)
	if err == nil || !isDataError(err) {
		return stats, err
	}
	if len(recs) == 1 {
		reason := fmt.Sprintf("the database refused the folded row: %s; fix the payload and insert it again", pgMessage(err))
		return a.applyOnce(ctx, decodeBatch(recs, &reason), endLSN)
	}
	var total applyStats
	for i := range recs {
		lsn := uint64(0)
		if i == len(recs)-1 {
			lsn = endLSN
		}
		s, err := a.apply(ctx, recs[i:i+1], lsn)
		if err != nil {
			return total, err
		}
		total.add(s)
	}
	return total, nil
}

// decodeBatch decodes every record; forcedReject turns them all into rejects.
func decodeBatch(recs []sourceRecord, forcedReject *string) *foldInput {
	in := &foldInput{}
	seen := make(map[string]bool)
	for i := range recs {
		src := &recs[i]
		in.ids = append(in.ids, src.ID)
		if forcedReject != nil {
			in.rejects = append(in.rejects, pendingReject{src, *forcedReject})
			continue
		}
		ev, err := outbox.Decode(src.Record)
		if err != nil {
			in.rejects = append(in.rejects, pendingReject{src, err.Error()})
			continue
		}
		in.events = append(in.events, ev)
		in.evSrc = append(in.evSrc, src)
		if !seen[ev.UserID] {
			seen[ev.UserID] = true
			in.userIDs = append(in.userIDs, ev.UserID)
		}
	}
	return in
}

func (a *applier) applyOnce(ctx context.Context, in *foldInput, endLSN uint64) (stats applyStats, err error) {
	// Any failure after the pipelined BEGIN leaves the transaction open or
	// aborted: end it so the connection stays usable.
	defer func() {
		if err != nil && !a.conn.IsClosed() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_, _ = a.conn.Exec(rctx, "ROLLBACK")
		}
	}()
	accounted, states, err := a.lockAndLoad(ctx, in, endLSN)
	if err != nil {
		return stats, err
	}
	history, changed, stats := foldBatch(in, accounted, states)
	w := newWriteBatch()
	w.queueUsers(changed, states)
	w.queueHistory(history)
	rejects := 0
	for _, r := range in.rejects {
		if !accounted[r.src.ID] {
			w.addReject(r, in.redactedPayload(r))
			accounted[r.src.ID] = true
			rejects++
		} else {
			stats.Skipped++
		}
	}
	w.queueRejects()
	if err := a.redact(ctx, in.redact); err != nil {
		return stats, err
	}
	w.b.Queue("COMMIT")
	if err := a.conn.SendBatch(ctx, w.b).Close(); err != nil {
		return stats, fmt.Errorf("write batch: %w", err)
	}
	stats.Rejected = rejects
	return stats, nil
}

// foldLockID is the transaction-scoped advisory lock every apply takes, so
// that replicators of different slots on one database (a rename, a
// misconfiguration) cannot interleave their read-fold-write of a user.
const foldLockID = 0x7573796e63666f6c // "usyncfol"

const (
	checkpointCAS = `UPDATE neon_auth.replicator_checkpoint
		SET lsn = GREATEST(lsn, $3::pg_lsn), updated_at = now()
		WHERE slot_name = $1 AND generation = $2`
	accountedSQL = `SELECT outbox_id FROM neon_auth.users_sync_history WHERE outbox_id = ANY($1::int8[])
		UNION ALL
		SELECT outbox_id FROM neon_auth.outbox_rejects WHERE outbox_id = ANY($1::int8[])`
	loadStatesSQL = `SELECT q.id, u.id IS NOT NULL, u.name, u.email, u.created_at, u.updated_at, u.deleted_at, u.raw_json::text,
			s.profile_at, s.profile_outbox_id, s.last_at, s.last_outbox_id
		FROM unnest($1::text[]) AS q(id)
		LEFT JOIN neon_auth.users_sync u ON u.id = q.id
		LEFT JOIN neon_auth.users_sync_state s ON s.user_id = q.id
		WHERE u.id IS NOT NULL OR s.user_id IS NOT NULL`
)

// lockAndLoad opens the transaction, takes the checkpoint row (the fence:
// it fails when another instance has taken a newer generation, and it
// serialises concurrent appliers so the accounted-for check below is
// race-free), and loads the outbox ids already accounted for and the
// current state of the batch's users.
func (a *applier) lockAndLoad(ctx context.Context, in *foldInput, endLSN uint64) (map[int64]bool, map[string]*outbox.State, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	// Fold state is shared by every slot's replicator: take turns.
	b.Queue("SELECT pg_advisory_xact_lock($1)", int64(foldLockID))
	b.Queue(checkpointCAS, a.slot, a.generation, pglogrepl.LSN(endLSN).String())
	b.Queue(accountedSQL, in.ids)
	b.Queue(loadStatesSQL, in.userIDs)
	b.Queue(forgottenSQL, in.forgottenCandidates())
	br := a.conn.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, nil, fmt.Errorf("begin apply: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		return nil, nil, fmt.Errorf("take fold lock: %w", err)
	}
	tag, err := br.Exec()
	if err != nil {
		return nil, nil, fmt.Errorf("advance checkpoint: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return nil, nil, ErrFenced
	}
	accounted := make(map[int64]bool)
	rows, _ := br.Query()
	var id int64
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { accounted[id] = true; return nil }); err != nil {
		return nil, nil, fmt.Errorf("load accounted ids: %w", err)
	}
	states, err := scanStates(br)
	if err != nil {
		return nil, nil, err
	}
	if err := in.readForgotten(br); err != nil {
		return nil, nil, fmt.Errorf("load forgotten users: %w", err)
	}
	return accounted, states, br.Close()
}

func scanStates(br pgx.BatchResults) (map[string]*outbox.State, error) {
	states := make(map[string]*outbox.State)
	rows, _ := br.Query()
	defer rows.Close()
	for rows.Next() {
		var (
			id, raw           string
			hasRow            bool
			row               outbox.Row
			rawText           *string
			profileAt, lastAt *time.Time
			profileID, lastID *int64
		)
		if err := rows.Scan(&id, &hasRow, &row.Name, &row.Email, &row.CreatedAt, &row.UpdatedAt, &row.DeletedAt, &rawText,
			&profileAt, &profileID, &lastAt, &lastID); err != nil {
			return nil, fmt.Errorf("load user state: %w", err)
		}
		st := &outbox.State{Profile: keyOf(profileAt, profileID), Last: keyOf(lastAt, lastID)}
		if hasRow {
			if rawText != nil {
				raw = *rawText
			}
			row.ID, row.RawJSON = id, []byte(raw)
			st.Row = &row
		}
		states[id] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load user state: %w", err)
	}
	return states, nil
}

func keyOf(at *time.Time, id *int64) outbox.Key {
	if at == nil || id == nil {
		return outbox.Key{}
	}
	return outbox.Key{At: at.UTC(), OutboxID: *id}
}

// foldBatch folds the batch's events in order into states, skipping those
// already accounted for, and returns the history to write and the users whose
// state changed.
func foldBatch(in *foldInput, accounted map[int64]bool, states map[string]*outbox.State) ([]historyEntry, []string, applyStats) {
	var (
		history []historyEntry
		changed []string
		stats   applyStats
	)
	isChanged := make(map[string]bool)
	for i := range in.events {
		ev := &in.events[i]
		if accounted[ev.OutboxID] {
			stats.Skipped++
			continue
		}
		accounted[ev.OutboxID] = true
		if in.forgotten[ev.UserID] { // erased: recorded, redacted, never folded
			history = append(history, in.forgottenEntry(ev, in.evSrc[i]))
			stats.folded(outbox.OpForgotten, in.evSrc[i])
			continue
		}
		st := states[ev.UserID]
		if st == nil {
			st = &outbox.State{}
		}
		next, op := outbox.Fold(*st, *ev)
		history = append(history, historyEntry{ev: ev, src: in.evSrc[i], op: op, before: st.Row, after: next.Row})
		states[ev.UserID] = &next
		if op != outbox.OpStale && !isChanged[ev.UserID] {
			isChanged[ev.UserID] = true
			changed = append(changed, ev.UserID)
		}
		stats.folded(op, in.evSrc[i])
	}
	return history, changed, stats
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

func pgMessage(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	return err.Error()
}
