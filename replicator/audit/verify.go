package audit

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
	"github.com/usersync/usersync/replicator"
)

// VerifyConfig is what Verify needs. Zero fields take the defaults.
type VerifyConfig struct {
	// Slot is the replication slot whose confirmed position tells which
	// pending outbox rows must already be folded (default users_sync).
	Slot string
	// UsersPerPass bounds how many users' fold registers one pass over the
	// outbox keeps in memory (default 250000); more users take more passes.
	UsersPerPass int
	// PageSize is the number of rows read per query (default 2000).
	PageSize int
	// Settle bounds the wait for an active replicator to fold the rows that
	// were pending when Verify started (default 30s).
	Settle time.Duration
	// Progress shows how far the scan has got (default: nothing).
	Progress Progress
	// OnDifference receives each difference as it is found (default: ignored).
	OnDifference func(Difference) error
}

func (c VerifyConfig) withDefaults() VerifyConfig {
	if c.Slot == "" {
		c.Slot = "users_sync"
	}
	if c.UsersPerPass <= 0 {
		c.UsersPerPass = 250_000
	}
	if c.PageSize <= 0 {
		c.PageSize = 2000
	}
	if c.Settle <= 0 {
		c.Settle = 30 * time.Second
	}
	if c.Progress == nil {
		c.Progress = noProgress{}
	}
	if c.OnDifference == nil {
		c.OnDifference = func(Difference) error { return nil }
	}
	return c
}

// VerifyReport sums up a verification.
type VerifyReport struct {
	// OutboxRows is the number of outbox rows read.
	OutboxRows int64 `json:"outbox_rows"`
	// Folded and Rejected count the rows accounted for by a history row
	// and by a reject row.
	Folded   int64 `json:"folded"`
	Rejected int64 `json:"rejected"`
	// Users is the number of users compared with the fold.
	Users int64 `json:"users"`
	// Pending counts rows not yet accounted for that could not be checked:
	// no active replicator confirmed past them within Settle.
	Pending int64 `json:"pending"`
	// Passes is the number of passes over the outbox (see UsersPerPass).
	Passes int `json:"passes"`
	// Differences and DifferingUsers count what differs.
	Differences    int64 `json:"differences"`
	DifferingUsers int64 `json:"differing_users"`
}

// Verify recomputes the pure fold of every accounted-for outbox row (those
// with a history row; rejected rows fold nothing) with the replicator's own
// outbox.Decode and outbox.Fold, compares it with users_sync and the
// registers in users_sync_state, and checks that every outbox row is
// accounted for exactly once — rows still pending when it starts are given
// Settle to be folded by an active replicator, and count as lost if the slot
// confirms past them while they stay unaccounted. Forgotten users must be
// absent. Each difference goes to cfg.OnDifference as it is found.
//
// Memory is bounded by cfg.UsersPerPass users' register keys, never by the
// outbox: rows are read in pages and only each user's winning keys are kept
// (the fold depends on nothing else); the content is then read back for the
// winners only. All reads of the comparison are in one repeatable-read
// snapshot, so it is exact while the replicator applies.
func Verify(ctx context.Context, conn *pgx.Conn, cfg VerifyConfig) (VerifyReport, error) {
	cfg = cfg.withDefaults()
	if err := replicator.CheckSchema(ctx, conn); err != nil {
		return VerifyReport{}, err
	}
	v := &verifier{cfg: cfg, conn: conn}
	pending, walAt, err := v.pendingNow(ctx)
	if err != nil {
		return v.report, err
	}
	if err := v.checkFold(ctx); err != nil {
		return v.report, err
	}
	if err := v.checkPending(ctx, pending, walAt); err != nil {
		return v.report, err
	}
	return v.report, nil
}

type verifier struct {
	cfg    VerifyConfig
	conn   *pgx.Conn
	report VerifyReport
}

// emit reports the differences of one user (or one outbox row).
func (v *verifier) emit(diffs ...Difference) error {
	if len(diffs) == 0 {
		return nil
	}
	if diffs[0].UserID != "" {
		v.report.DifferingUsers++
	}
	for _, d := range diffs {
		v.report.Differences++
		if err := v.cfg.OnDifference(d); err != nil {
			return err
		}
	}
	return nil
}

// regKeys are one user's register keys while the outbox is folded.
type regKeys struct{ profile, last outbox.Key }

// foldKeys folds ev into k with outbox.Fold itself, without the content:
// which event wins a register depends only on the keys and types.
func foldKeys(k *regKeys, ev *outbox.Event) {
	next, _ := outbox.Fold(outbox.State{Profile: k.profile, Last: k.last},
		outbox.Event{OutboxID: ev.OutboxID, Type: ev.Type, UserID: ev.UserID, OccurredAt: ev.OccurredAt})
	k.profile, k.last = next.Profile, next.Last
}

// partition assigns a user to one of n passes.
func partition(userID string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(userID))
	return int(h.Sum32() % uint32(n))
}

func (v *verifier) checkFold(ctx context.Context) error {
	tx, err := v.conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin snapshot: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	forgotten, err := loadForgotten(ctx, tx)
	if err != nil {
		return err
	}
	if err := v.checkDoubleAccounting(ctx, tx); err != nil {
		return err
	}
	rows, passes, err := v.plan(ctx, tx)
	if err != nil {
		return err
	}
	v.report.Passes = passes
	v.cfg.Progress.Start("verify", rows*int64(passes))
	defer v.cfg.Progress.Finish()
	for p := range passes {
		keys, err := v.foldPass(ctx, tx, p, passes, forgotten)
		if err != nil {
			return err
		}
		if err := v.comparePass(ctx, tx, p, passes, keys, forgotten); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// plan counts the outbox rows and chooses the number of passes from an
// upper bound of the users: those stored and those with history.
func (v *verifier) plan(ctx context.Context, tx pgx.Tx) (int64, int, error) {
	var rows, stored, registers, historyUsers int64
	err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM neon_auth.outbox),
			(SELECT count(*) FROM neon_auth.users_sync), (SELECT count(*) FROM neon_auth.users_sync_state),
			(SELECT count(DISTINCT user_id) FROM neon_auth.users_sync_history)`).Scan(&rows, &stored, &registers, &historyUsers)
	if err != nil {
		return 0, 0, fmt.Errorf("count users: %w", err)
	}
	users := max(stored, registers, historyUsers)
	passes := int((users + int64(v.cfg.UsersPerPass) - 1) / int64(v.cfg.UsersPerPass))
	return rows, max(passes, 1), nil
}

func loadForgotten(ctx context.Context, q pgx.Tx) (map[string]bool, error) {
	rows, _ := q.Query(ctx, "SELECT user_id FROM neon_auth.forgotten_users")
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read forgotten users: %w", err)
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// checkDoubleAccounting reports outbox rows with both a history and a reject row.
func (v *verifier) checkDoubleAccounting(ctx context.Context, tx pgx.Tx) error {
	rows, _ := tx.Query(ctx, `SELECT h.outbox_id FROM neon_auth.users_sync_history h
		JOIN neon_auth.outbox_rejects r ON r.outbox_id = h.outbox_id ORDER BY 1`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("check accounting: %w", err)
	}
	for _, id := range ids {
		if err := v.emit(Difference{OutboxID: id, Column: "accounting", Want: "a history row or a reject row", Got: "both"}); err != nil {
			return err
		}
	}
	return nil
}

const foldPageSQL = `SELECT ` + outboxColumns + `, h.user_id, h.operation, r.outbox_id IS NOT NULL
	FROM neon_auth.outbox o
	LEFT JOIN neon_auth.users_sync_history h ON h.outbox_id = o.id
	LEFT JOIN neon_auth.outbox_rejects r ON r.outbox_id = o.id
	WHERE o.id > $1 ORDER BY o.id LIMIT $2`

// foldPass reads the whole outbox in pages and folds the register keys of
// the users of partition p.
func (v *verifier) foldPass(ctx context.Context, tx pgx.Tx, p, passes int, forgotten map[string]bool) (map[string]*regKeys, error) {
	keys := make(map[string]*regKeys)
	var after int64
	for {
		rows, err := tx.Query(ctx, foldPageSQL, after, v.cfg.PageSize)
		if err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		n := 0
		var diffs []Difference
		for rows.Next() {
			var histUser, op *string
			var rejected bool
			rec, err := scanRecord(rows, &histUser, &op, &rejected)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("read outbox: %w", err)
			}
			n++
			after = rec.ID
			diffs = append(diffs, v.foldRow(rec, histUser, op, rejected, p, passes, forgotten, keys)...)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		for _, d := range diffs {
			if err := v.emit(d); err != nil {
				return nil, err
			}
		}
		v.cfg.Progress.Add(int64(n))
		if n < v.cfg.PageSize {
			return keys, nil
		}
	}
}

// foldRow folds one outbox row into keys when it belongs to partition p,
// and on the first pass counts it and reports a row whose history does not
// match its payload.
func (v *verifier) foldRow(rec outbox.Record, histUser, op *string, rejected bool, p, passes int,
	forgotten map[string]bool, keys map[string]*regKeys) []Difference {
	first := p == 0
	if first {
		v.report.OutboxRows++
	}
	switch {
	case rejected:
		if first && histUser == nil {
			v.report.Rejected++
		}
		return nil
	case histUser == nil: // pending: checked by checkPending
		return nil
	}
	if first {
		v.report.Folded++
	}
	if *op == string(outbox.OpForgotten) || forgotten[*histUser] {
		return nil
	}
	ev, err := outbox.Decode(rec)
	if err != nil {
		if !first {
			return nil
		}
		return []Difference{{OutboxID: rec.ID, Column: "decode", Want: "a payload the fold accepts, as it has a history row", Got: err.Error()}}
	}
	var diffs []Difference
	if ev.UserID != *histUser && first {
		diffs = append(diffs, Difference{OutboxID: rec.ID, Column: "user_id", Want: ev.UserID, Got: *histUser})
	}
	if forgotten[ev.UserID] || partition(ev.UserID, passes) != p {
		return diffs
	}
	k := keys[ev.UserID]
	if k == nil {
		k = &regKeys{}
		keys[ev.UserID] = k
	}
	foldKeys(k, &ev)
	return diffs
}
