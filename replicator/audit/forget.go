package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
	"github.com/usersync/usersync/replicator"
)

// ForgetReport says what Forget erased.
type ForgetReport struct {
	UserID string `json:"user_id"`
	// AlreadyForgotten is true when the user had been forgotten before; the
	// erasure is still redone, for anything that arrived since.
	AlreadyForgotten bool `json:"already_forgotten"`
	// RowRemoved is true when users_sync had a row for the user.
	RowRemoved bool `json:"row_removed"`
	// HistoryCleared counts history rows whose before/after were erased.
	HistoryCleared int64 `json:"history_cleared"`
	// OutboxRedacted and RejectsRedacted count payloads replaced by
	// {"id": USER_ID, "forgotten": true}.
	OutboxRedacted  int64 `json:"outbox_redacted"`
	RejectsRedacted int64 `json:"rejects_redacted"`
}

// ErrNoReason is returned by Forget without a reason: the erasure record
// must say why.
var ErrNoReason = errors.New("a reason is required: it is recorded in neon_auth.forgotten_users")

// redactedSQL is the payload that replaces a forgotten user's, for the user $1.
const redactedSQL = `jsonb_build_object('id', $1::text, 'forgotten', true)`

// A payload names the user when its user object, bare or in an envelope's
// "data", has the id: how the fold finds it, and how a reject's payload
// (which has no user id column) is attributed.
const namesUserSQL = `(payload->>'id' = $1 OR payload->'data'->>'id' = $1)`

// Forget erases userID (GDPR art. 17) in one transaction under the apply's
// fold lock: the users_sync row and registers are deleted, the user's
// history rows lose before/after but keep their bookkeeping, the user's
// outbox and reject payloads become {"id": userID, "forgotten": true}, and
// neon_auth.forgotten_users records it. The replicator then records any
// later event for the user as 'forgotten', redacted, without bringing the
// user back. Forgetting a user again redoes the erasure and keeps the first
// record.
func Forget(ctx context.Context, conn *pgx.Conn, userID, reason string) (ForgetReport, error) {
	report := ForgetReport{UserID: userID}
	switch {
	case userID == "":
		return report, errors.New("the user id is empty")
	case strings.TrimSpace(reason) == "":
		return report, ErrNoReason
	}
	if err := replicator.CheckSchema(ctx, conn); err != nil {
		return report, err
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := replicator.BeginExternalWrite(ctx, tx); err != nil {
			return err
		}
		return erase(ctx, tx, userID, reason, &report)
	})
	if err != nil {
		return report, fmt.Errorf("forget %s: %w", userID, err)
	}
	return report, nil
}

func erase(ctx context.Context, tx pgx.Tx, userID, reason string, report *ForgetReport) error {
	tag, err := tx.Exec(ctx, `INSERT INTO neon_auth.forgotten_users (user_id, reason) VALUES ($1, $2)
		ON CONFLICT (user_id) DO NOTHING`, userID, reason)
	if err != nil {
		return fmt.Errorf("record erasure: %w", err)
	}
	report.AlreadyForgotten = tag.RowsAffected() == 0
	if tag, err = tx.Exec(ctx, "DELETE FROM neon_auth.users_sync WHERE id = $1", userID); err != nil {
		return fmt.Errorf("delete users_sync row: %w", err)
	}
	report.RowRemoved = tag.RowsAffected() > 0
	if _, err = tx.Exec(ctx, "DELETE FROM neon_auth.users_sync_state WHERE user_id = $1", userID); err != nil {
		return fmt.Errorf("delete registers: %w", err)
	}
	if tag, err = tx.Exec(ctx, `UPDATE neon_auth.users_sync_history SET before = NULL, after = NULL
		WHERE user_id = $1 AND (before IS NOT NULL OR after IS NOT NULL)`, userID); err != nil {
		return fmt.Errorf("clear history: %w", err)
	}
	report.HistoryCleared = tag.RowsAffected()
	if tag, err = tx.Exec(ctx, `UPDATE neon_auth.outbox_rejects SET payload = `+redactedSQL+`
		WHERE `+namesUserSQL+` AND payload IS DISTINCT FROM `+redactedSQL, userID); err != nil {
		return fmt.Errorf("redact rejects: %w", err)
	}
	report.RejectsRedacted = tag.RowsAffected()
	ids, err := userOutboxRows(ctx, tx, userID)
	if err != nil {
		return err
	}
	if tag, err = tx.Exec(ctx, `UPDATE neon_auth.outbox SET payload = `+redactedSQL+`
		WHERE id = ANY($2::int8[]) AND payload IS DISTINCT FROM `+redactedSQL, userID, ids); err != nil {
		return fmt.Errorf("redact outbox: %w", err)
	}
	report.OutboxRedacted = tag.RowsAffected()
	return nil
}

// userOutboxRows finds the user's outbox rows: those folded for the user
// (by their history rows), those rejected that name the user, and those not
// yet accounted for that decode to the user or name the user and do not
// decode. Exact for folded rows, so that no other user's fold is touched.
func userOutboxRows(ctx context.Context, tx pgx.Tx, userID string) ([]int64, error) {
	rows, _ := tx.Query(ctx, `SELECT outbox_id FROM neon_auth.users_sync_history WHERE user_id = $1 AND outbox_id IS NOT NULL
		UNION SELECT outbox_id FROM neon_auth.outbox_rejects WHERE `+namesUserSQL, userID)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("find the user's outbox rows: %w", err)
	}
	rows, err = tx.Query(ctx, `SELECT `+outboxColumns+` FROM neon_auth.outbox o
		WHERE (o.payload->>'id' = $1 OR o.payload->'data'->>'id' = $1)
		AND NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
		AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)`, userID)
	if err != nil {
		return nil, fmt.Errorf("find the user's pending outbox rows: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("find the user's pending outbox rows: %w", err)
		}
		if ev, err := outbox.Decode(rec); err != nil || ev.UserID == userID {
			ids = append(ids, rec.ID)
		}
	}
	return ids, rows.Err()
}
