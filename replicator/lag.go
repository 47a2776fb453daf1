package replicator

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Lag is how far the feed is behind, as the server sees it.
type Lag struct {
	// SlotExists is false when the slot is missing; the LSN figures are then zero.
	SlotExists bool
	// WALEnd is the server's current WAL position, pg_current_wal_lsn().
	WALEnd pglogrepl.LSN
	// ConfirmedLSN is the slot's confirmed_flush_lsn.
	ConfirmedLSN pglogrepl.LSN
	// Bytes is WALEnd minus ConfirmedLSN: WAL the slot still holds.
	Bytes int64
	// Seconds is the age (by received_at) of the oldest outbox row not yet
	// folded or rejected: how stale users_sync is. 0 when none is pending.
	Seconds float64
	// Frontier is the outbox id below which every row was accounted for
	// when read: pass it to the next ReadLag, so that each reading only
	// looks at the rows added since.
	Frontier int64
}

const (
	slotLagSQL = `SELECT pg_current_wal_lsn()::text, s.confirmed_flush_lsn::text
		FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`
	// The oldest pending row after the frontier, by id (an index range scan
	// over the rows added since the last reading), and the newest id.
	pendingLagSQL = `SELECT (SELECT COALESCE(max(id), 0) FROM neon_auth.outbox),
			p.id, GREATEST(EXTRACT(epoch FROM now() - p.received_at), 0)::float8
		FROM (SELECT 1) AS one LEFT JOIN LATERAL (
			SELECT o.id, o.received_at FROM neon_auth.outbox o
			WHERE o.id > $1
			AND NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
			AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)
			ORDER BY o.id LIMIT 1) AS p ON true`
)

// ReadLag reads the slot's lag in bytes and the age of the oldest outbox
// row with an id above frontier that is not yet accounted for (0 reads
// the whole outbox). A row that takes an id, then commits after the
// frontier passed it, is not seen: it is folded as soon as it commits.
func ReadLag(ctx context.Context, conn *pgx.Conn, slot string, frontier int64) (Lag, error) {
	var lag Lag
	var walEnd string
	var confirmed *string
	if err := conn.QueryRow(ctx, slotLagSQL, slot).Scan(&walEnd, &confirmed); err != nil {
		return lag, fmt.Errorf("read slot lag: %w", err)
	}
	var err error
	if lag.WALEnd, err = pglogrepl.ParseLSN(walEnd); err != nil {
		return lag, err
	}
	if confirmed != nil {
		lag.SlotExists = true
		if lag.ConfirmedLSN, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return lag, err
		}
		lag.Bytes = max(int64(lag.WALEnd)-int64(lag.ConfirmedLSN), 0)
	}
	var newest int64
	var oldestPending *int64
	var age *float64
	if err := conn.QueryRow(ctx, pendingLagSQL, frontier).Scan(&newest, &oldestPending, &age); err != nil {
		return lag, fmt.Errorf("read apply lag: %w", err)
	}
	lag.Frontier = max(frontier, newest)
	if oldestPending != nil {
		lag.Frontier = *oldestPending - 1
		lag.Seconds = *age
	}
	return lag, nil
}
