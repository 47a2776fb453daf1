package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/usersync/usersync/outbox"
)

// durableCommitSQL turns synchronous_commit back on for the insert's
// transaction when a role or database default turned it off: a 2xx promises
// the event is durable, and with it off COMMIT returns before the WAL is
// flushed. Stronger settings (remote_apply, say) are kept. It is set in the
// transaction, not at connect time, because a pooler such as PgBouncer
// (Neon's -pooler host) refuses it as a startup parameter.
const durableCommitSQL = `SELECT set_config('synchronous_commit', 'on', true) WHERE current_setting('synchronous_commit') = 'off'`

// store inserts the event, retrying once when the failure happened before
// anything reached the server (a pooled connection the server had closed).
func (h *Handler) store(ctx context.Context, ev outbox.NewEvent, res result) result {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.InsertTimeout)
	defer cancel()
	var (
		id       int64
		inserted bool
		err      error
	)
	for attempt := 0; attempt < 2; attempt++ {
		err = pgx.BeginFunc(ctx, h.db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, durableCommitSQL); err != nil {
				return fmt.Errorf("require a durable commit: %w", err)
			}
			id, inserted, err = outbox.Insert(ctx, tx, ev)
			return err
		})
		if err == nil || !pgconn.SafeToRetry(err) || ctx.Err() != nil {
			break
		}
	}
	switch {
	case err == nil && inserted:
		res.status, res.outcome, res.outboxID = http.StatusOK, outcomeStored, id
	case err == nil:
		res.status, res.outcome, res.outboxID = http.StatusOK, outcomeDuplicate, id
	default:
		res.status, res.outcome, res.reason, res.cause = classify(err)
	}
	return res
}

// classify turns an insert error into the answer that makes the sender do
// the right thing: 400 when the body itself cannot be stored (retrying would
// fail forever), 503 otherwise (the provider retries; nothing is lost).
func classify(err error) (status int, outcome, reason string, cause error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		// Class 22 is data exception (e.g. 22P05, \u0000 in a string), class
		// 54 program limit exceeded (e.g. nesting too deep for jsonb).
		// Message only: Detail and Where may quote the body.
		if class := pgErr.Code[:2]; class == "22" || class == "54" {
			return http.StatusBadRequest, outcomeBadRequest, fmt.Sprintf("PostgreSQL cannot store this body as jsonb: %s (SQLSTATE %s)", pgErr.Message, pgErr.Code), nil
		}
	}
	if errors.Is(err, outbox.ErrInvalidEvent) {
		return http.StatusBadRequest, outcomeBadRequest, err.Error(), nil
	}
	return http.StatusServiceUnavailable, outcomeUnavailable, "the database could not take the event; retry later", err
}
