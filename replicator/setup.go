package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// sessionParams make text output of timestamps parseable the same way on the
// replication and the apply connection.
var sessionParams = map[string]string{
	"timezone":         "UTC",
	"datestyle":        "ISO, MDY",
	"application_name": "usersync-replicator",
}

// applyParams bound how long an apply transaction can sit idle holding the
// checkpoint row: an instance paused mid-apply must not block the standby
// that takes over from it.
var applyParams = map[string]string{
	"idle_in_transaction_session_timeout": "30000",
}

// connectApply opens the ordinary connection that applies batches.
func connectApply(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, configErrorf("DATABASE_URL: %v", err)
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	for k, v := range applyParams {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", Explain(err))
	}
	return conn, nil
}

// connectReplication opens a logical replication connection.
func connectReplication(ctx context.Context, url string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return nil, configErrorf("DATABASE_URL: %v", err)
	}
	if strings.Contains(cfg.Host, "-pooler.") {
		return nil, configErrorf("DATABASE_URL points at Neon's pooler (%s), which cannot carry replication: use the direct host, without -pooler", cfg.Host)
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["replication"] = "database"
	// A receive deadline must only cut reads short: pgx's default handler sets
	// the write deadline too, which would fail a status update being sent by
	// the applier at that moment.
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler { return &readDeadlineHandler{pc: pc} }
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect for replication: %w", Explain(err))
	}
	return conn, nil
}

type readDeadlineHandler struct{ pc *pgconn.PgConn }

func (h *readDeadlineHandler) HandleCancel(context.Context) {
	_ = h.pc.Conn().SetReadDeadline(time.Now())
}
func (h *readDeadlineHandler) HandleUnwatchAfterCancel() {
	_ = h.pc.Conn().SetReadDeadline(time.Time{})
}

// preflight refuses to go on, with a sentence saying what to do, when the
// server or the schema cannot work; it returns the server's wal_sender_timeout.
func preflight(ctx context.Context, conn *pgx.Conn) (time.Duration, error) {
	var walLevel string
	var senderTimeoutMS int64
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'),
		COALESCE((SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'), 60000)`).Scan(&walLevel, &senderTimeoutMS)
	if err != nil {
		return 0, fmt.Errorf("read server settings: %w", err)
	}
	if walLevel != "logical" {
		return 0, configErrorf("wal_level is %q, but logical replication needs \"logical\": on Neon enable logical replication in the project settings; elsewhere set wal_level = logical in postgresql.conf and restart PostgreSQL", walLevel)
	}
	if _, err := preflightSchema(ctx, conn); err != nil {
		return 0, err
	}
	return time.Duration(senderTimeoutMS) * time.Millisecond, nil
}

// ensurePublication creates the publication on the outbox when it is missing.
func ensurePublication(ctx context.Context, conn *pgx.Conn, name string, logger *slog.Logger) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look up publication: %w", err)
	}
	if exists {
		return checkPublication(ctx, conn, name)
	}
	_, err := conn.Exec(ctx, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE neon_auth.outbox WITH (publish = 'insert')", pgx.Identifier{name}.Sanitize()))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // created by a racing instance
		return nil
	}
	if err != nil {
		return fmt.Errorf("create publication %s: %w", name, Explain(err))
	}
	logger.Info("created publication", "publication", name)
	return nil
}

// checkPublication refuses a same-named publication that would stream
// nothing: one without neon_auth.outbox (dropping and recreating the table
// removes it) or without inserts.
func checkPublication(ctx context.Context, conn *pgx.Conn, name string) error {
	var hasOutbox, inserts bool
	err := conn.QueryRow(ctx, `SELECT
			EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'neon_auth' AND tablename = 'outbox'),
			(SELECT pubinsert FROM pg_publication WHERE pubname = $1)`, name).Scan(&hasOutbox, &inserts)
	if err != nil {
		return fmt.Errorf("check publication %s: %w", name, err)
	}
	if !hasOutbox || !inserts {
		return configErrorf("publication %q exists but does not publish inserts into neon_auth.outbox: run DROP PUBLICATION %s; and start again (it is recreated), or choose another name with --publication", name, pgx.Identifier{name}.Sanitize())
	}
	return nil
}

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

// ensureSlot makes sure the slot exists and can be streamed from, creating
// (or, when invalidated, recreating) it. created reports that the slot is new,
// so WAL before now is not in it and the catch-up must fold what it lacks.
func ensureSlot(ctx context.Context, conn *pgx.Conn, slot string, logger *slog.Logger) (info slotInfo, created bool, err error) {
	info, err = readSlot(ctx, conn, slot)
	if err != nil {
		return info, false, err
	}
	var dbName string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		return info, false, err
	}
	switch {
	case info.Exists && info.Database != dbName:
		return info, false, configErrorf("replication slot %q belongs to database %q, not %q: choose another name with --slot", slot, info.Database, dbName)
	case info.Exists && info.Plugin != "pgoutput":
		return info, false, configErrorf("replication slot %q uses plugin %q, not pgoutput: drop it or choose another name with --slot", slot, info.Plugin)
	case info.Exists && info.Active:
		return info, false, ErrSlotBusy
	case info.Exists && info.Lost:
		logger.Warn("replication slot was invalidated; recreating it and folding what it missed from the outbox",
			"slot", slot, "cause", invalidationCause(info.LostReason))
		if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot); err != nil {
			return info, false, fmt.Errorf("drop invalidated slot %s: %w", slot, Explain(err))
		}
	case info.Exists:
		return info, false, nil
	}
	if err := owePendingCatchUp(ctx, conn, slot); err != nil {
		return info, false, err
	}
	if err := createSlot(ctx, conn, slot); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" {
			return info, false, ErrSlotBusy // a racing instance created it and owns it now
		}
		return info, false, fmt.Errorf("create replication slot %s: %w", slot, Explain(err))
	}
	info, err = readSlot(ctx, conn, slot)
	return info, true, err
}

// createSlot creates the logical slot, on PostgreSQL 17+ as a failover
// slot: a standby with sync_replication_slots keeps a copy, so that a
// promoted standby still has the slot and nothing has to be caught up. The
// failover argument does not exist before 17.
func createSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return fmt.Errorf("read server version: %w", err)
	}
	sql := "SELECT pg_create_logical_replication_slot($1, 'pgoutput')"
	if version >= 170000 {
		sql = "SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
	}
	_, err := conn.Exec(ctx, sql, slot)
	return err
}

// invalidationCause says in words why the server invalidated a slot, from
// its invalidation_reason (PostgreSQL 17+; empty before, where WAL removal
// is the only cause).
func invalidationCause(reason string) string {
	switch reason {
	case "", "wal_removed":
		return "the WAL it needed was removed (max_slot_wal_keep_size)"
	case "idle_timeout":
		return "it was unused for longer than idle_replication_slot_timeout"
	case "rows_removed":
		return "rows it needed were removed by vacuum"
	case "wal_level_insufficient":
		return "wal_level was lowered below logical"
	}
	return reason
}

// checkpoint is the slot's row of neon_auth.replicator_checkpoint.
type checkpoint struct {
	LSN           pglogrepl.LSN
	Generation    int64
	CatchUpEpoch  int64
	CaughtUpEpoch int64
	Fresh         bool // this is the first instance ever to own the slot
}

// owesCatchUp reports whether a slot (re)creation has not yet been followed
// by a complete catch-up.
func (c checkpoint) owesCatchUp() bool { return c.CaughtUpEpoch < c.CatchUpEpoch }

// readCheckpointLSN returns the slot's checkpoint LSN, 0/0 when it has none.
func readCheckpointLSN(ctx context.Context, conn *pgx.Conn, slot string) (pglogrepl.LSN, error) {
	var lsnText string
	err := conn.QueryRow(ctx, "SELECT lsn::text FROM neon_auth.replicator_checkpoint WHERE slot_name = $1", slot).Scan(&lsnText)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read checkpoint of slot %s: %w", slot, err)
	}
	return pglogrepl.ParseLSN(lsnText)
}

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

// takeOwnership starts a new generation for the slot's checkpoint row: from
// now on, applies of any older instance fail their compare-and-set. Only the
// instance streaming from the slot calls it, so a standby never fences the
// active instance.
func takeOwnership(ctx context.Context, conn *pgx.Conn, slot string) (checkpoint, error) {
	var c checkpoint
	var lsnText string
	// An instance paused mid-apply holds the row until the server ends its
	// idle transaction; rather than wait with the slot held and unanswered,
	// give up after a while and retry the session.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SET LOCAL lock_timeout = '10s'")
	q := b.Queue(`INSERT INTO neon_auth.replicator_checkpoint AS c (slot_name, generation)
		VALUES ($1, 1)
		ON CONFLICT (slot_name) DO UPDATE SET generation = c.generation + 1, updated_at = now()
		RETURNING generation, lsn::text, catchup_epoch, caught_up_epoch`, slot)
	q.QueryRow(func(row pgx.Row) error { return row.Scan(&c.Generation, &lsnText, &c.CatchUpEpoch, &c.CaughtUpEpoch) })
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return c, fmt.Errorf("take checkpoint of slot %s: %w", slot, err)
	}
	var err error
	c.Fresh = c.Generation == 1
	c.LSN, err = pglogrepl.ParseLSN(lsnText)
	return c, err
}

// markCaughtUp records that a catch-up that started at epoch completed.
func markCaughtUp(ctx context.Context, conn *pgx.Conn, slot string, generation, epoch int64) error {
	tag, err := conn.Exec(ctx, `UPDATE neon_auth.replicator_checkpoint
		SET caught_up_epoch = GREATEST(caught_up_epoch, $3), updated_at = now()
		WHERE slot_name = $1 AND generation = $2`, slot, generation, epoch)
	if err != nil {
		return fmt.Errorf("record catch-up: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return ErrFenced
	}
	return nil
}
