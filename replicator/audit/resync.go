package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
	"github.com/usersync/usersync/replicator"
)

// ResyncConfig says which users Resync repairs. Zero fields take the defaults.
type ResyncConfig struct {
	// UserIDs are the users to recompute and repair where they differ.
	UserIDs []string
	// All finds the differing users with Verify (UserIDs must be empty).
	All bool
	// Verify configures the scan of All; its OnDifference is replaced.
	Verify VerifyConfig
	// BatchSize is the number of users repaired per transaction (default 100).
	BatchSize int
	// Progress shows how far the repair has got (default: nothing).
	Progress Progress
	// OnRepair receives each repair once it has committed (default: ignored).
	OnRepair func(Repair) error
}

// Repair is one user rewritten from the fold.
type Repair struct {
	UserID string `json:"user_id"`
	// Columns are the columns and registers that differed.
	Columns []string `json:"columns"`
	// Before and After are the users_sync row before and after (null when
	// absent; always null for a forgotten user, whose data is not kept).
	Before json.RawMessage `json:"before"`
	After  json.RawMessage `json:"after"`
}

// ResyncReport sums up a resync.
type ResyncReport struct {
	// Checked is the number of users recomputed; Repaired those rewritten.
	Checked  int64 `json:"checked"`
	Repaired int64 `json:"repaired"`
	// Verify is the scan that chose the users, with All.
	Verify *VerifyReport `json:"verify,omitempty"`
}

// ErrNoUsers is returned by Resync when it is given neither users nor All.
var ErrNoUsers = errors.New("no users to resync: name users or ask for all")

// Resync rewrites users' rows and registers from the pure fold of their
// accounted-for events, where they differ, recording each repair in
// users_sync_history with operation resync and the before/after rows.
// Each batch of users is one transaction under the apply's fold lock
// (replicator.BeginExternalWrite), recomputed inside it, so it is safe while
// the replicator streams; a user already right is left alone, so running it
// twice repairs nothing the second time.
func Resync(ctx context.Context, conn *pgx.Conn, cfg ResyncConfig) (ResyncReport, error) {
	var report ResyncReport
	if cfg.All == (len(cfg.UserIDs) > 0) {
		if cfg.All {
			return report, errors.New("name users or ask for all, not both")
		}
		return report, ErrNoUsers
	}
	if err := replicator.CheckSchema(ctx, conn); err != nil {
		return report, err
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	if cfg.Progress == nil {
		cfg.Progress = noProgress{}
	}
	ids := slices.Clone(cfg.UserIDs)
	if cfg.All {
		vr, differing, err := differingUsers(ctx, conn, cfg)
		report.Verify = &vr
		if err != nil {
			return report, err
		}
		ids = differing
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	cfg.Progress.Start("resync", int64(len(ids)))
	defer cfg.Progress.Finish()
	for chunk := range slices.Chunk(ids, cfg.BatchSize) {
		repairs, err := repairBatch(ctx, conn, chunk)
		if err != nil {
			return report, err
		}
		report.Checked += int64(len(chunk))
		for _, r := range repairs {
			report.Repaired++
			if cfg.OnRepair != nil {
				if err := cfg.OnRepair(r); err != nil {
					return report, err
				}
			}
		}
		cfg.Progress.Add(int64(len(chunk)))
	}
	return report, nil
}

// differingUsers runs Verify and returns the users it found differing.
func differingUsers(ctx context.Context, conn *pgx.Conn, cfg ResyncConfig) (VerifyReport, []string, error) {
	seen := make(map[string]bool)
	var ids []string
	vcfg := cfg.Verify
	vcfg.OnDifference = func(d Difference) error {
		if d.UserID != "" && !seen[d.UserID] {
			seen[d.UserID] = true
			ids = append(ids, d.UserID)
		}
		return nil
	}
	if vcfg.Progress == nil {
		vcfg.Progress = cfg.Progress
	}
	vr, err := Verify(ctx, conn, vcfg)
	return vr, ids, err
}

// testHookBeforeRepair, when set by a test, runs between a batch's reads
// and its writes: where an apply must not slip in.
var testHookBeforeRepair func(ids []string)

// userEventsSQL reads the folded events of the users $1, found through
// their history rows.
const userEventsSQL = `SELECT ` + outboxColumns + `
	FROM neon_auth.users_sync_history h JOIN neon_auth.outbox o ON o.id = h.outbox_id
	WHERE h.user_id = ANY($1::text[]) AND h.operation <> 'forgotten'
	AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)
	ORDER BY o.id`

const loadUsersSQL = `SELECT q.id, ` + stateColumns + `
	FROM unnest($1::text[]) AS q(id)
	LEFT JOIN neon_auth.users_sync u ON u.id = q.id
	LEFT JOIN neon_auth.users_sync_state s ON s.user_id = q.id`

// repairBatch recomputes and repairs ids in one transaction.
func repairBatch(ctx context.Context, conn *pgx.Conn, ids []string) ([]Repair, error) {
	var repairs []Repair
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := replicator.BeginExternalWrite(ctx, tx); err != nil {
			return err
		}
		forgotten, err := forgottenAmong(ctx, tx, ids)
		if err != nil {
			return err
		}
		wants, err := foldUsers(ctx, tx, ids, forgotten)
		if err != nil {
			return err
		}
		gots, err := loadUsers(ctx, tx, ids)
		if err != nil {
			return err
		}
		if testHookBeforeRepair != nil {
			testHookBeforeRepair(ids)
		}
		b := &pgx.Batch{}
		for _, id := range ids {
			want, got := wants[id], gots[id]
			diffs := userDifferences(id, want, got)
			if len(diffs) == 0 {
				continue
			}
			r := Repair{UserID: id, Before: rowJSON(got.row), After: rowJSON(want.Row)}
			for _, d := range diffs {
				r.Columns = append(r.Columns, d.Column)
			}
			if forgotten[id] {
				r.Before, r.After = nil, nil
			}
			queueRepair(b, id, want, r)
			repairs = append(repairs, r)
		}
		if b.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, fmt.Errorf("resync: %w", err)
	}
	return repairs, nil
}

func forgottenAmong(ctx context.Context, tx pgx.Tx, ids []string) (map[string]bool, error) {
	rows, _ := tx.Query(ctx, "SELECT user_id FROM neon_auth.forgotten_users WHERE user_id = ANY($1::text[])", ids)
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read forgotten users: %w", err)
	}
	out := make(map[string]bool, len(list))
	for _, id := range list {
		out[id] = true
	}
	return out, nil
}

// foldUsers folds each user's accounted-for events from scratch.
func foldUsers(ctx context.Context, tx pgx.Tx, ids []string, forgotten map[string]bool) (map[string]outbox.State, error) {
	wanted := make(map[string]bool, len(ids))
	for _, id := range ids {
		wanted[id] = !forgotten[id]
	}
	states := make(map[string]outbox.State, len(ids))
	rows, err := tx.Query(ctx, userEventsSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		ev, err := outbox.Decode(rec)
		if err != nil || !wanted[ev.UserID] {
			continue // verify reports both; nothing here can repair them
		}
		states[ev.UserID], _ = outbox.Fold(states[ev.UserID], ev)
	}
	return states, rows.Err()
}

func loadUsers(ctx context.Context, tx pgx.Tx, ids []string) (map[string]userState, error) {
	rows, err := tx.Query(ctx, loadUsersSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	defer rows.Close()
	out := make(map[string]userState, len(ids))
	for rows.Next() {
		var id string
		us, err := scanUserState(rows, &id)
		if err != nil {
			return nil, fmt.Errorf("read users: %w", err)
		}
		out[id] = us
	}
	return out, rows.Err()
}

// queueRepair queues the writes that make id's row and registers want.
func queueRepair(b *pgx.Batch, id string, want outbox.State, r Repair) {
	if want.Row == nil {
		b.Queue("DELETE FROM neon_auth.users_sync WHERE id = $1", id)
		b.Queue("DELETE FROM neon_auth.users_sync_state WHERE user_id = $1", id)
	} else {
		row := want.Row
		b.Queue(`INSERT INTO neon_auth.users_sync (id, name, email, created_at, updated_at, deleted_at, raw_json)
			VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
				created_at = excluded.created_at, updated_at = excluded.updated_at,
				deleted_at = excluded.deleted_at, raw_json = excluded.raw_json`,
			id, row.Name, row.Email, row.CreatedAt, row.UpdatedAt, row.DeletedAt, string(row.RawJSON))
		b.Queue(`INSERT INTO neon_auth.users_sync_state (user_id, profile_at, profile_outbox_id, last_at, last_outbox_id)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id) DO UPDATE SET profile_at = excluded.profile_at,
				profile_outbox_id = excluded.profile_outbox_id, last_at = excluded.last_at,
				last_outbox_id = excluded.last_outbox_id`,
			id, keyAtPtr(want.Profile), keyIDPtr(want.Profile), want.Last.At, want.Last.OutboxID)
	}
	b.Queue(`INSERT INTO neon_auth.users_sync_history (user_id, operation, occurred_at, before, after)
		VALUES ($1, 'resync', now(), $2::jsonb, $3::jsonb)`, id, textOrNil(r.Before), textOrNil(r.After))
}

func rowJSON(r *outbox.Row) json.RawMessage {
	if r == nil {
		return nil
	}
	return r.JSON()
}

func textOrNil(b json.RawMessage) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

func keyAtPtr(k outbox.Key) any {
	if k.IsZero() {
		return nil
	}
	return k.At
}

func keyIDPtr(k outbox.Key) any {
	if k.IsZero() {
		return nil
	}
	return k.OutboxID
}
