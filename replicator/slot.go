package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// slotInfo is what the server says about our slot.
type slotInfo struct {
	Exists         bool
	Active         bool
	Plugin         string
	Database       string
	Lost           bool
	LostReason     string // invalidation_reason (PostgreSQL 17+); empty on older servers
	ConfirmedFlush pglogrepl.LSN
}

func readSlot(ctx context.Context, conn *pgx.Conn, slot string) (slotInfo, error) {
	var s slotInfo
	var confirmed *string
	// invalidation_reason (17+) is read through to_jsonb, which yields NULL
	// where the column does not exist: one query for PostgreSQL 14 to 18.
	// Every invalidation shows as wal_status 'lost' too (14 and 15 know only
	// WAL removal; 16 adds conflicts on standbys, 18 idle_timeout).
	err := conn.QueryRow(ctx, `SELECT active, COALESCE(plugin, ''), COALESCE(database, ''),
			COALESCE(wal_status = 'lost' OR to_jsonb(s) ->> 'invalidation_reason' IS NOT NULL, false),
			COALESCE(to_jsonb(s) ->> 'invalidation_reason', ''),
			confirmed_flush_lsn::text
		FROM pg_replication_slots s WHERE slot_name = $1`, slot).
		Scan(&s.Active, &s.Plugin, &s.Database, &s.Lost, &s.LostReason, &confirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("look up replication slot: %w", err)
	}
	s.Exists = true
	if confirmed != nil {
		if s.ConfirmedFlush, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return s, fmt.Errorf("slot %s confirmed_flush_lsn %q: %w", slot, *confirmed, err)
		}
	}
	return s, nil
}

// slotStart is where a session streams from, and what it found on the way.
type slotStart struct {
	// LSN is the position START_REPLICATION asks for; never beyond the
	// server's flushed WAL.
	LSN pglogrepl.LSN
	// Created reports that the slot was (re)created by this session: the
	// WAL before LSN is not in it, and the catch-up must fold what the slot
	// will not stream, reading under Snapshot.
	Created bool
	// Snapshot names the snapshot exported when the slot was created. It
	// sees exactly the transactions whose commits the slot will not
	// stream, and stays importable until repl runs its next command.
	Snapshot string
	// Recreated reports that an existing slot was distrusted (and a warning
	// said why) before it was created again.
	Recreated bool
	// ResetCheckpoint reports that the checkpoint row's LSN cannot be kept
	// (a new slot, or a row from another cluster): the new owner sets it to LSN.
	ResetCheckpoint bool
}

// checkpointRow is the slot's checkpoint as a session finds it at start.
type checkpointRow struct {
	LSN         pglogrepl.LSN // 0/0 when there is no row
	OwesCatchUp bool
	WALFlush    pglogrepl.LSN // the server's flushed WAL end, read with it
	// Publication is the publication identity recorded by the slot's last
	// owner (publicationIdentity); "" when none was recorded.
	Publication string
}

func readCheckpointRow(ctx context.Context, conn *pgx.Conn, slot string) (checkpointRow, error) {
	var c checkpointRow
	var flush, lsn string
	err := conn.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text, COALESCE(c.lsn, '0/0')::text,
			COALESCE(c.catchup_epoch > c.caught_up_epoch, false), COALESCE(c.publication_id, '')
		FROM (SELECT 1) AS one LEFT JOIN neon_auth.replicator_checkpoint c ON c.slot_name = $1`, slot).
		Scan(&flush, &lsn, &c.OwesCatchUp, &c.Publication)
	if err != nil {
		return c, fmt.Errorf("read checkpoint of slot %s: %w", slot, err)
	}
	if c.WALFlush, err = pglogrepl.ParseLSN(flush); err != nil {
		return c, err
	}
	c.LSN, err = pglogrepl.ParseLSN(lsn)
	return c, err
}

// prepareSlot makes sure the slot can be streamed from and returns where to
// start. It creates the slot on repl when it is missing, and recreates it
// when it cannot be trusted to carry everything not yet folded: invalidated
// (max_slot_wal_keep_size), confirmed beyond the server's WAL (a slot of
// another cluster's history), or owing a catch-up that its creator did not
// finish — that catch-up is exact only under the snapshot exported at the
// slot's creation, which died with its creator — or decoding with another
// publication than the one its last owner recorded (publication, see
// publicationIdentity).
func prepareSlot(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn, slot, publication string, logger *slog.Logger) (slotStart, error) {
	info, err := readSlot(ctx, conn, slot)
	if err != nil {
		return slotStart{}, err
	}
	var dbName string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		return slotStart{}, err
	}
	switch {
	case info.Exists && info.Database != dbName:
		return slotStart{}, configErrorf("replication slot %q belongs to database %q, not %q: choose another name with --slot", slot, info.Database, dbName)
	case info.Exists && info.Plugin != "pgoutput":
		return slotStart{}, configErrorf("replication slot %q uses plugin %q, not pgoutput: drop it or choose another name with --slot", slot, info.Plugin)
	case info.Exists && info.Active:
		return slotStart{}, ErrSlotBusy
	}
	ck, err := readCheckpointRow(ctx, conn, slot)
	if err != nil {
		return slotStart{}, err
	}
	if info.Exists {
		reason := distrust(info, ck, publication)
		if reason == "" {
			return resumePosition(info, ck, slot, logger), nil
		}
		logger.Warn("replication slot "+reason+"; recreating it and folding what it missed from the outbox", "slot", slot)
		if err := dropSlot(ctx, conn, slot); err != nil {
			return slotStart{}, err
		}
	}
	st, err := createSlot(ctx, conn, repl, slot)
	st.Recreated = info.Exists
	return st, err
}

// distrust says why an existing, inactive slot must be recreated, or "".
func distrust(info slotInfo, ck checkpointRow, publication string) string {
	switch {
	case info.Lost:
		return "was invalidated (" + invalidationCause(info.LostReason) + ")"
	case info.ConfirmedFlush > ck.WALFlush:
		return fmt.Sprintf("is confirmed up to %s, beyond the server's WAL end %s (a slot restored from another cluster, or acknowledged into the future)", info.ConfirmedFlush, ck.WALFlush)
	case ck.OwesCatchUp:
		return "was created by an instance that did not finish catching up"
	case ck.Publication != "" && ck.Publication != publication:
		return "was decoding with a publication that has changed since (dropped and created again, or neon_auth.outbox taken out of it): rows committed meanwhile were never streamed"
	}
	return ""
}

// resumePosition streams an existing slot from the checkpoint or the slot's
// confirmed position, whichever is later — unless the checkpoint lies beyond
// the server's WAL: a checkpoint row carried over from another cluster by
// pg_dump/restore or a logical migration. Streaming from there would skip
// every new row and acknowledge WAL that does not exist yet.
func resumePosition(info slotInfo, ck checkpointRow, slot string, logger *slog.Logger) slotStart {
	if ck.LSN > ck.WALFlush {
		logger.Warn("the checkpoint is beyond the server's WAL end: it was copied from another cluster (pg_dump/restore or a logical migration?); streaming from the slot's position instead",
			"slot", slot, "checkpoint", ck.LSN.String(), "wal_end", ck.WALFlush.String(), "from", info.ConfirmedFlush.String())
		return slotStart{LSN: info.ConfirmedFlush, ResetCheckpoint: true}
	}
	return slotStart{LSN: max(ck.LSN, info.ConfirmedFlush)}
}

func dropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55006" { // taken by another instance meanwhile
		return ErrSlotBusy
	}
	if err != nil {
		return fmt.Errorf("drop replication slot %s: %w", slot, Explain(err))
	}
	return nil
}

// createSlot records the catch-up the new slot owes, then creates it on the
// replication connection with an exported snapshot. The slot streams every
// transaction that commits after its consistent point; the snapshot sees
// every other one — including a transaction whose commit record precedes
// the consistent point but which no ordinary snapshot shows yet (its commit
// waits for a synchronous standby, as every commit on Neon waits for the
// safekeepers). Reading the catch-up under that snapshot leaves no gap.
func createSlot(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn, slot string) (slotStart, error) {
	if err := owePendingCatchUp(ctx, conn, slot); err != nil {
		return slotStart{}, err
	}
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return slotStart{}, fmt.Errorf("read server version: %w", err)
	}
	// The legacy spelling, which every supported major accepts; 17+ also
	// makes it a failover slot, which a standby with sync_replication_slots
	// keeps, so that after a failover the promoted server still has it and
	// nothing needs catching up. Slot names are checked identifiers.
	command := fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput EXPORT_SNAPSHOT", slot)
	if version >= 170000 {
		command = fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)", slot)
	}
	res, err := pglogrepl.ParseCreateReplicationSlot(repl.Exec(ctx, command))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" {
		return slotStart{}, ErrSlotBusy // a racing instance created it and owns it now
	}
	if err != nil {
		return slotStart{}, fmt.Errorf("create replication slot %s: %w", slot, Explain(err))
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return slotStart{}, fmt.Errorf("create replication slot %s: consistent point %q: %w", slot, res.ConsistentPoint, err)
	}
	if !snapshotName.MatchString(res.SnapshotName) {
		return slotStart{}, fmt.Errorf("create replication slot %s: unexpected snapshot name %q", slot, res.SnapshotName)
	}
	return slotStart{LSN: lsn, Created: true, Snapshot: res.SnapshotName, ResetCheckpoint: true}, nil
}

// snapshotName is the shape of an exported snapshot's name (e.g.
// 00000003-00000002-1); SET TRANSACTION SNAPSHOT takes no parameters, so the
// name is checked before it is spliced in.
var snapshotName = regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{8}-[0-9]+$`)

// owePendingCatchUp records, before the slot is created, that the WAL before
// its start is not in it: whoever owns the slot next must catch up.
func owePendingCatchUp(ctx context.Context, conn *pgx.Conn, slot string) error {
	_, err := conn.Exec(ctx, `INSERT INTO neon_auth.replicator_checkpoint AS c (slot_name, catchup_epoch) VALUES ($1, 1)
		ON CONFLICT (slot_name) DO UPDATE SET catchup_epoch = c.catchup_epoch + 1, updated_at = now()`, slot)
	if err != nil {
		return fmt.Errorf("record the catch-up owed by slot %s: %w", slot, err)
	}
	return nil
}

// invalidationCause says in words why the server invalidated a slot, from
// its invalidation_reason (PostgreSQL 17+; empty before, where WAL removal
// is the only cause on a primary).
func invalidationCause(reason string) string {
	switch reason {
	case "", "wal_removed":
		return "the WAL it needed was removed: max_slot_wal_keep_size"
	case "idle_timeout":
		return "unused for longer than idle_replication_slot_timeout"
	case "rows_removed":
		return "rows it needed were removed by vacuum"
	case "wal_level_insufficient":
		return "wal_level was lowered below logical"
	}
	return reason
}
