package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/internal/pgcluster"
	"github.com/usersync/usersync/replicator"
)

// demoData holds provider samples (see shared/testdata/providers for their provenance).
//
//go:embed demodata/*.json
var demoData embed.FS

func devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "start a throwaway local PostgreSQL with logical WAL, migrate it and run the replicator against it",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "demo", Usage: "insert sample Clerk and Stack Auth events, show the result and exit"},
		},
		Action: func(c *cli.Context) error {
			logger, err := newLogger(c)
			if err != nil {
				return err
			}
			setMemoryLimit()
			return runDev(c.Context, c.App.Writer, logger, c.Bool("demo"))
		},
	}
}

func runDev(ctx context.Context, out io.Writer, logger *slog.Logger, demo bool) (err error) {
	fmt.Fprintln(out, "starting a throwaway PostgreSQL (wal_level=logical)...")
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if derr := cluster.Destroy(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = derr
		}
	}()
	url := cluster.URL("postgres")
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect to the throwaway database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := replicator.Migrate(ctx, conn); err != nil {
		return err
	}
	fmt.Fprintf(out, "database ready: %s\n", url)

	runCtx, stopReplicator := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- replicator.Run(runCtx, replicator.Config{DatabaseURL: url, Logger: logger}) }()
	defer func() {
		stopReplicator()
		if rerr := <-done; rerr != nil && err == nil {
			err = rerr
		}
	}()
	if !demo {
		fmt.Fprintln(out, "replicator running; insert into neon_auth.outbox and query neon_auth.users_sync. Ctrl-C stops and removes everything.")
		select {
		case <-ctx.Done():
			return nil
		case err := <-done:
			done <- err
			return err
		}
	}
	if err := waitStreaming(ctx, conn); err != nil {
		return err
	}
	return runDemo(ctx, out, conn)
}

// waitStreaming waits until the replicator holds the slot and has finished
// its start-up catch-up, so that the demo's events travel through the WAL.
func waitStreaming(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var active bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots s
			JOIN pg_stat_replication r ON r.pid = s.active_pid
			JOIN neon_auth.replicator_checkpoint c ON c.slot_name = s.slot_name
			WHERE s.slot_name = 'users_sync' AND c.generation > 0 AND c.caught_up_epoch >= c.catchup_epoch)`).Scan(&active)
		if err != nil {
			return fmt.Errorf("wait for the replicator to stream: %w", err)
		}
		if active {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("the replicator did not start streaming within 30s")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// demoEvent is one sample outbox insert.
type demoEvent struct {
	what, provider, eventType, file, eventID string
	occurredAt                               *time.Time
	payload                                  string
}

func demoEvents() []demoEvent {
	stackCreated := time.Date(2025, 10, 7, 5, 23, 37, 0, time.UTC)
	stackUpdated := stackCreated.Add(24 * time.Hour)
	return []demoEvent{
		{what: "clerk user.updated, delivered before its user.created", provider: "clerk", eventType: "user.updated", file: "clerk_user.updated.json", eventID: "msg_demo_clerk_2"},
		{what: "clerk user.created, arriving late (recorded as stale)", provider: "clerk", eventType: "user.created", file: "clerk_user.created.json", eventID: "msg_demo_clerk_1"},
		{what: "clerk user.created redelivered (same svix-id: not stored again)", provider: "clerk", eventType: "user.created", file: "clerk_user.created.json", eventID: "msg_demo_clerk_1"},
		{what: "stack user.created", provider: "stack", eventType: "user.created", file: "stackauth_user.created.json", eventID: "msg_demo_stack_1", occurredAt: &stackCreated},
		{what: "stack user.updated", provider: "stack", eventType: "user.updated", file: "stackauth_user.updated.json", eventID: "msg_demo_stack_2", occurredAt: &stackUpdated},
		{what: "malformed clerk user.deleted without a user id (becomes a reject)", provider: "clerk", eventType: "user.deleted", eventID: "msg_demo_bad", payload: `{"type":"user.deleted","object":"event","data":{"object":"user","deleted":true}}`},
	}
}

func runDemo(ctx context.Context, out io.Writer, conn *pgx.Conn) error {
	var last int64
	for _, ev := range demoEvents() {
		payload := ev.payload
		if ev.file != "" {
			b, err := demoData.ReadFile("demodata/" + ev.file)
			if err != nil {
				return err
			}
			payload = string(b)
		}
		var id int64
		err := conn.QueryRow(ctx, `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at)
			VALUES ($1, $2, $3::jsonb, $4, $5) ON CONFLICT (provider, event_id) DO NOTHING RETURNING id`,
			ev.provider, ev.eventType, payload, ev.eventID, ev.occurredAt).Scan(&id)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			fmt.Fprintf(out, "  outbox  -    %s\n", ev.what)
		case err != nil:
			return fmt.Errorf("insert demo event: %w", err)
		default:
			fmt.Fprintf(out, "  outbox  #%d  %s\n", id, ev.what)
			last = max(last, id)
		}
	}
	if err := waitAccounted(ctx, conn, last); err != nil {
		return err
	}
	return printDemoTables(ctx, out, conn)
}

// waitAccounted waits until every outbox row up to id has a history or reject row.
func waitAccounted(ctx context.Context, conn *pgx.Conn, id int64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var pending int64
		err := conn.QueryRow(ctx, `SELECT count(*) FROM neon_auth.outbox o WHERE o.id <= $1
			AND NOT EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.outbox_id = o.id)
			AND NOT EXISTS (SELECT 1 FROM neon_auth.outbox_rejects r WHERE r.outbox_id = o.id)`, id).Scan(&pending)
		if err != nil {
			return fmt.Errorf("wait for the replicator: %w", err)
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the replicator did not fold the demo events within 30s (%d pending)", pending)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func printDemoTables(ctx context.Context, out io.Writer, conn *pgx.Conn) error {
	queries := []struct{ title, sql string }{
		{"neon_auth.users_sync", `SELECT id, coalesce(name, '') AS name, coalesce(email, '') AS email,
			coalesce(to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '') AS updated_at,
			coalesce(to_char(deleted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '') AS deleted_at
			FROM neon_auth.users_sync ORDER BY id`},
		{"neon_auth.users_sync_history", `SELECT outbox_id, user_id, event_type, operation,
			coalesce(source_lsn::text, 'backfill') AS source_lsn FROM neon_auth.users_sync_history ORDER BY id`},
		{"neon_auth.outbox_rejects", `SELECT outbox_id, provider, event_type, error FROM neon_auth.outbox_rejects ORDER BY outbox_id`},
	}
	for _, q := range queries {
		if err := printQuery(ctx, out, conn, q.title, q.sql); err != nil {
			return err
		}
	}
	return nil
}

func printQuery(ctx context.Context, out io.Writer, conn *pgx.Conn, title, sql string) error {
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return fmt.Errorf("query %s: %w", title, err)
	}
	defer rows.Close()
	fmt.Fprintf(out, "\n%s\n", title)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	var names []string
	for _, f := range rows.FieldDescriptions() {
		names = append(names, f.Name)
	}
	fmt.Fprintln(tw, "  "+strings.Join(names, "\t"))
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return err
		}
		cells := make([]string, len(vals))
		for i, v := range vals {
			cells[i] = fmt.Sprint(v)
		}
		fmt.Fprintln(tw, "  "+strings.Join(cells, "\t"))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return tw.Flush()
}
