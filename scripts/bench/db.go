package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// slotName is the replicator's default slot, which the benchmark leaves as is.
const slotName = "users_sync"

// connect opens a connection whose session shows times in UTC, so that
// times compared as text compare as values.
func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	cfg.RuntimeParams["timezone"] = "UTC"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Database, err)
	}
	return conn, nil
}

// poll calls done every interval until it reports true, fails, or timeout
// passes; p, when set, ends the wait early if the replicator exits.
func poll(ctx context.Context, what string, interval, timeout time.Duration, p *replicatorProcess, done func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := done()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if p != nil {
			if err := p.exited(); err != nil {
				return fmt.Errorf("wait for %s: %w", what, err)
			}
		}
		if time.Now().After(deadline) {
			tail := ""
			if p != nil {
				tail = p.logs.tail()
			}
			return fmt.Errorf("%s did not happen within %s%s", what, timeout, tail)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

const (
	isAccountedSQL = `SELECT EXISTS (SELECT 1 FROM neon_auth.users_sync_history WHERE outbox_id = $1)
		OR EXISTS (SELECT 1 FROM neon_auth.outbox_rejects WHERE outbox_id = $1)`
	unaccountedSQL = `SELECT (SELECT count(*) FROM neon_auth.outbox)
		- (SELECT count(*) FROM neon_auth.users_sync_history) - (SELECT count(*) FROM neon_auth.outbox_rejects)`
)

// waitAccounted waits until every outbox row has a history or reject row
// and returns when that was first seen. Rows are folded in id order (the
// catch-up reads by id, the stream in commit order, and each figure's rows
// are committed one after the other), so it polls the last row, which is
// cheap, every 10 ms; then it counts everything once to be sure.
func waitAccounted(ctx context.Context, conn *pgx.Conn, p *replicatorProcess, lastID int64, timeout time.Duration) (time.Time, error) {
	var seen time.Time
	err := poll(ctx, fmt.Sprintf("outbox row %d to be folded", lastID), 10*time.Millisecond, timeout, p, func() (bool, error) {
		var ok bool
		err := conn.QueryRow(ctx, isAccountedSQL, lastID).Scan(&ok)
		seen = time.Now()
		return ok, err
	})
	if err != nil {
		return time.Time{}, err
	}
	err = poll(ctx, "every outbox row to be folded", 100*time.Millisecond, timeout, p, func() (bool, error) {
		var missing int64
		err := conn.QueryRow(ctx, unaccountedSQL).Scan(&missing)
		return missing == 0, err
	})
	return seen, err
}

// waitSent waits until the walsender of the replicator's slot has sent
// lsn: it has decoded the WAL before it (the replicator's own writes
// included) and, being caught up, told the replicator the WAL end, which
// the replicator confirms (at once in memory; to the slot at its next
// status update or when it stops).
func waitSent(ctx context.Context, conn *pgx.Conn, p *replicatorProcess, lsn string) error {
	return poll(ctx, "the slot's walsender to send "+lsn, 20*time.Millisecond, 2*time.Minute, p, func() (bool, error) {
		var ok bool
		err := conn.QueryRow(ctx, `SELECT COALESCE(bool_or(r.sent_lsn >= $2::pg_lsn), false)
			FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
			WHERE s.slot_name = $1`, slotName, lsn).Scan(&ok)
		return ok, err
	})
}

func currentLSN(ctx context.Context, conn *pgx.Conn) (string, error) {
	var lsn string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		return "", fmt.Errorf("read WAL position: %w", err)
	}
	return lsn, nil
}

func lastOutboxID(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var id int64
	if err := conn.QueryRow(ctx, "SELECT COALESCE(max(id), 0) FROM neon_auth.outbox").Scan(&id); err != nil {
		return 0, fmt.Errorf("read last outbox id: %w", err)
	}
	return id, nil
}

// checkpoint flushes dirty buffers before a timed part, so that it does not
// pay for the writes of the part before.
func checkpoint(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}
