package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// sessionParams make text output of timestamps parseable the same way on the
// replication and the apply connection.
var sessionParams = map[string]string{
	"timezone":         "UTC",
	"datestyle":        "ISO, MDY",
	"application_name": replicatorAppName,
}

// replicatorAppName names every connection of the replicator, so that a new
// owner can tell a stale instance's backend from anyone else's.
const replicatorAppName = "usersync-replicator"

// keyedAccessParams pin the plans of the replicator's statements, which
// touch a few rows of large tables by key: index probes are right whatever
// the statistics say, and the statistics are at their worst exactly when
// the replicator is busiest — after a bulk load, before autovacuum has
// analyzed, the tables look empty, and a plan that scans a whole table for
// every batch looks cheap. With sequential scans of tables ruled out, the
// planner still joins a batch's own rows (arrays, CTEs) however it likes.
// With table scans ruled out, one generic plan per statement fits every
// batch size, so it is made once per connection rather than per batch: a
// custom plan of the fold statement costs a small batch as much as running it.
var keyedAccessParams = map[string]string{
	"enable_seqscan":  "off",
	"plan_cache_mode": "force_generic_plan",
	// A batch's history images are sorted into apply order in memory.
	"work_mem": "64MB",
	// Row estimates of array parameters are guesses; compiling a batch's
	// statement costs far more than running it.
	"jit": "off",
}

// applyParams bound how long an apply transaction can sit idle holding the
// checkpoint row: an instance paused mid-apply must not block the standby
// that takes over from it.
var applyParams = map[string]string{
	"idle_in_transaction_session_timeout": "30000",
}

// readerParams let the catch-up reader hold its snapshot while the applier
// works (an apply, an ownership wait) yet not forever if the process stops:
// a reader cut off ends the session, and the slot is recreated to catch up.
var readerParams = map[string]string{
	"idle_in_transaction_session_timeout": "600000",
}

// connectApply opens the ordinary connection that applies batches. Its
// commits must be durable before the position they cover is acknowledged
// to the slot, so an inherited synchronous_commit=off (set on the role or
// the database) is overridden; any stronger setting is kept.
func connectApply(ctx context.Context, url string) (*pgx.Conn, error) {
	conn, err := connect(ctx, url, applyParams)
	if err != nil {
		return nil, err
	}
	if err := ensureDurableCommit(ctx, conn); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return conn, nil
}

// connectReader opens the connection the catch-up reads the outbox on.
func connectReader(ctx context.Context, url string) (*pgx.Conn, error) {
	return connect(ctx, url, readerParams)
}

func connect(ctx context.Context, url string, params map[string]string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, configErrorf("DATABASE_URL: %v", err)
	}
	for _, m := range []map[string]string{sessionParams, keyedAccessParams, params} {
		for k, v := range m {
			cfg.RuntimeParams[k] = v
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", Explain(err))
	}
	return conn, nil
}

// ensureDurableCommit turns synchronous_commit=off into on for this session.
// With off, COMMIT returns before its WAL is flushed: a server crash in the
// WAL writer's window would lose a fold whose source position the slot
// already confirmed. local, remote_write, on and remote_apply all flush
// locally first and are left as the operator chose them.
func ensureDurableCommit(ctx context.Context, conn *pgx.Conn) error {
	var setting string
	if err := conn.QueryRow(ctx, "SELECT current_setting('synchronous_commit')").Scan(&setting); err != nil {
		return fmt.Errorf("read synchronous_commit: %w", err)
	}
	if setting != "off" {
		return nil
	}
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		return fmt.Errorf("set synchronous_commit: %w", err)
	}
	return nil
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

// publicationIdentity names the publication as the slot decodes with it:
// the publication row's oid and version (xmin: ALTER PUBLICATION … SET
// rewrites it), the outbox's membership in it (the oid of its
// pg_publication_rel row, and on PostgreSQL 15+ of the neon_auth schema's
// pg_publication_namespace row) and the outbox table's oid. One of them
// changes whenever the publication is dropped and created again, stops
// publishing inserts, loses the outbox (or its schema) and gets it back, or
// the outbox is dropped and created again: each a moment when rows could be
// committed that the slot never streams. "" when there is no publication.
func publicationIdentity(ctx context.Context, conn *pgx.Conn, name string) (string, error) {
	schemaMember, schemaJoin := "''", ""
	if serverMajor(conn) >= 15 { // FOR TABLES IN SCHEMA is new in 15
		schemaMember = "COALESCE(n.oid::text, 'none')"
		schemaJoin = "LEFT JOIN pg_publication_namespace n ON n.pnpubid = p.oid AND n.pnnspid = 'neon_auth'::regnamespace"
	}
	var id string
	err := conn.QueryRow(ctx, `SELECT p.oid::text || '/' || p.xmin::text || '/'
			|| COALESCE(r.oid::text, CASE WHEN p.puballtables THEN 'all' ELSE 'none' END) || '/'
			|| `+schemaMember+` || '/' || 'neon_auth.outbox'::regclass::oid::text
		FROM pg_publication p
		LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid AND r.prrelid = 'neon_auth.outbox'::regclass
		`+schemaJoin+`
		WHERE p.pubname = $1`, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up publication %s: %w", name, err)
	}
	return id, nil
}

// serverMajor is the server's major version, from what it reported at
// connection; 0 when unknown.
func serverMajor(conn *pgx.Conn) int {
	v := conn.PgConn().ParameterStatus("server_version") // "15.18 (Debian …)", "18beta1"
	end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(v)
	}
	major, _ := strconv.Atoi(v[:end])
	return major
}

// recordPublication records, on the checkpoint row of the slot that this
// owner (generation) holds, the publication identity the slot carries
// every outbox row under (prepareSlot distrusts a slot whose recorded
// identity differs).
func recordPublication(ctx context.Context, conn *pgx.Conn, slot string, generation int64, id string) error {
	_, err := conn.Exec(ctx, `UPDATE neon_auth.replicator_checkpoint SET publication_id = $3
		WHERE slot_name = $1 AND generation = $2 AND publication_id IS DISTINCT FROM $3`, slot, generation, id)
	if err != nil {
		return fmt.Errorf("record the publication of slot %s: %w", slot, err)
	}
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
		return &ConfigError{kind: errPublicationUnusable, msg: fmt.Sprintf("publication %q exists but does not publish inserts into neon_auth.outbox: run DROP PUBLICATION %s; and start again (it is recreated), or choose another name with --publication", name, pgx.Identifier{name}.Sanitize())}
	}
	return nil
}
