package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Server timeouts. Reading a 1 MiB body takes well under readTimeout on any
// link a provider uses; a slower client is holding a connection hostage.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	startupTimeout    = 5 * time.Second
)

// Run listens on cfg.Listen and serves until ctx is cancelled, then stops
// accepting connections and waits up to cfg.ShutdownTimeout for in-flight
// requests to finish, so that an event being inserted is answered.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return Serve(ctx, ln, cfg)
}

// Serve is Run on a listener the caller opened; it closes ln.
func Serve(ctx context.Context, ln net.Listener, cfg Config) error {
	defer ln.Close()
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	if cfg.DatabaseURL == "" {
		return errors.New("DatabaseURL: empty; set DATABASE_URL")
	}
	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	// A 2xx promises the event is durable: never let a role or database
	// default of synchronous_commit=off acknowledge a commit not yet flushed.
	poolCfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer pool.Close()
	if err := checkSchema(ctx, pool, cfg.Logger); err != nil {
		return err
	}
	h, err := NewHandler(cfg, pool)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		// Covers reading the body and up to two insert attempts.
		WriteTimeout: readTimeout + 2*cfg.InsertTimeout + 5*time.Second,
		IdleTimeout:  idleTimeout,
		ErrorLog:     slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return serve(ctx, srv, ln, h, cfg)
}

func serve(ctx context.Context, srv *http.Server, ln net.Listener, h *Handler, cfg Config) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	cfg.Logger.Info("receiving webhooks", "address", ln.Addr().String(), "providers", configured(h), "max_body", cfg.MaxBody)
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// The shutdown must finish even though ctx is done: requests in flight
	// are inserting events the provider will not resend once answered.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("shut down: requests still in flight after %s: %w", cfg.ShutdownTimeout, err)
	}
	cfg.Logger.Info("receiver stopped", "stats", h.Stats())
	return nil
}

func configured(h *Handler) []string {
	var out []string
	for _, p := range Providers {
		if h.verifiers[p] != nil {
			out = append(out, p)
		}
	}
	return out
}

// checkSchema refuses to start against a database without neon_auth.outbox,
// whose every delivery would fail. An unreachable database is only a warning:
// deliveries get 503 until it is back, and the providers retry.
func checkSchema(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	var exists bool
	err := pool.QueryRow(ctx, "SELECT to_regclass('neon_auth.outbox') IS NOT NULL").Scan(&exists)
	if err != nil {
		logger.Warn("database unreachable; answering 503 until it is back", "error", err)
		return nil
	}
	if !exists {
		return errors.New("neon_auth.outbox does not exist: run 'replicator migrate' first")
	}
	return nil
}
