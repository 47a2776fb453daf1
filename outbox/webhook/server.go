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
// Providers rarely reuse a connection, so idle ones are not kept long.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	idleTimeout       = 30 * time.Second
	startupTimeout    = 5 * time.Second
)

// maxHeaderBytes bounds a request's header block to 32 KiB: net/http
// reads 4096 bytes more than http.Server.MaxHeaderBytes before it answers
// 431. A Svix delivery's headers take well under 2 KiB.
const maxHeaderBytes = 32<<10 - 4096

// fdReserve is the file descriptors kept for everything but the client
// connections: the listener, stdio, the runtime's poller, and some slack;
// the database pool's connections are counted on top.
const fdReserve = 32

// MinConns is the fewest connections worth serving with.
const MinConns = 16

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
	maxConns, err := connLimit(cfg.MaxConns, int64(poolCfg.MaxConns), openFileLimit())
	if err != nil {
		return err
	}
	if maxConns < cfg.MaxConns {
		cfg.Logger.Warn("connection bound lowered to fit the open-file limit (ulimit -n)",
			"max_conns", maxConns, "wanted", cfg.MaxConns, "open_file_limit", openFileLimit())
	}
	guard := newConnGuard(maxConns)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		// Covers reading the body and up to two insert attempts.
		WriteTimeout:   readTimeout + 2*cfg.InsertTimeout + 5*time.Second,
		IdleTimeout:    idleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		ConnState:      guard.track,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return serve(ctx, srv, guard.listener(ln), h, cfg, maxConns)
}

// connLimit lowers maxConns to what the open-file limit (0: unknown) leaves
// once the pool and fdReserve are counted. Past that limit accept fails with
// "too many open files", and a delivery would wait in the kernel's queue
// until some connection times out.
func connLimit(maxConns int, poolConns int64, limit uint64) (int, error) {
	if limit == 0 || limit > 1<<31 {
		return maxConns, nil
	}
	room := int64(limit) - fdReserve - poolConns
	if room >= int64(maxConns) {
		return maxConns, nil
	}
	if room < MinConns {
		return 0, fmt.Errorf("the open-file limit (ulimit -n) is %d, too low to serve webhooks: raise it to at least %d", limit, fdReserve+poolConns+MinConns)
	}
	return int(room), nil
}

func serve(ctx context.Context, srv *http.Server, ln net.Listener, h *Handler, cfg Config, maxConns int) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	cfg.Logger.Info("receiving webhooks", "address", ln.Addr().String(), "providers", configured(h),
		"max_body", cfg.MaxBody, "max_body_memory", cfg.MaxBodyMemory, "max_conns", maxConns)
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
