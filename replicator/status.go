package replicator

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Status is what `replicator status` reports about one slot.
type Status struct {
	Slot string `json:"slot"`
	// SlotExists is false when the slot has not been created yet or was dropped.
	SlotExists bool `json:"slot_exists"`
	// Active is true while a replicator streams from the slot.
	Active bool `json:"active"`
	// ConfirmedLSN is the slot's confirmed_flush_lsn: WAL before it may be recycled.
	ConfirmedLSN *string `json:"confirmed_lsn"`
	// AppliedLSN is the checkpoint: the end of the last source transaction folded.
	AppliedLSN *string `json:"applied_lsn"`
	// LagBytes is the WAL between the server's current position and ConfirmedLSN.
	LagBytes *int64 `json:"lag_bytes"`
	// LagSeconds is the age of the oldest outbox row not yet folded (0 when
	// none): how far behind users_sync is, as /readyz measures it.
	LagSeconds float64 `json:"lag_seconds"`
	// PendingEvents counts outbox rows with neither a history nor a reject row.
	PendingEvents int64 `json:"pending_events"`
	// Rejects counts rows of neon_auth.outbox_rejects.
	Rejects int64 `json:"rejects"`
	// LastAppliedAt is when the checkpoint last moved; nil before the first apply.
	LastAppliedAt *time.Time `json:"last_applied_at"`
}

// ReadStatus reads the status of slot. It needs the schema to exist.
func ReadStatus(ctx context.Context, conn *pgx.Conn, slot string) (Status, error) {
	st := Status{Slot: slot}
	if _, err := preflightSchema(ctx, conn); err != nil {
		return st, err
	}
	err := conn.QueryRow(ctx, `SELECT
			EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
			COALESCE((SELECT active FROM pg_replication_slots WHERE slot_name = $1), false),
			(SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1),
			(SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1),
			(SELECT lsn::text FROM neon_auth.replicator_checkpoint WHERE slot_name = $1),
			(SELECT updated_at FROM neon_auth.replicator_checkpoint WHERE slot_name = $1),
			(SELECT count(*) FROM neon_auth.outbox o
				WHERE NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
				AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)),
			(SELECT count(*) FROM neon_auth.outbox_rejects)`, slot).
		Scan(&st.SlotExists, &st.Active, &st.ConfirmedLSN, &st.LagBytes, &st.AppliedLSN, &st.LastAppliedAt, &st.PendingEvents, &st.Rejects)
	if err != nil {
		return st, fmt.Errorf("read status: %w", err)
	}
	lag, err := ReadLag(ctx, conn, slot, 0)
	if err != nil {
		return st, err
	}
	st.LagSeconds = lag.Seconds
	return st, nil
}

// preflightSchema checks that the schema is migrated to this binary's version.
func preflightSchema(ctx context.Context, conn *pgx.Conn) (int, error) {
	have, err := SchemaVersion(ctx, conn)
	if err != nil {
		return 0, err
	}
	want := LatestSchemaVersion()
	switch {
	case have == 0:
		return have, configErrorf("schema neon_auth is not set up in this database: run 'replicator migrate' first")
	case have < want:
		return have, configErrorf("schema neon_auth is at version %d but this replicator needs %d: run 'replicator migrate' first", have, want)
	}
	return have, nil
}
