package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// standbyMaxDelay caps the retry delay of a standby, so that it takes over
// within seconds of the active instance going away.
const standbyMaxDelay = 5 * time.Second

// Run folds outbox rows into users_sync until ctx is cancelled, then commits
// what it can of the open batch, reports its final position and returns nil.
// It reconnects after any connection loss and stands by while another
// instance holds the slot. It returns an error only for problems that
// retrying cannot fix (a *ConfigError: wal_level, schema, permissions).
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return configErrorf("config: %v", err)
	}
	r := &runner{cfg: cfg.withDefaults(), needCatchUp: !cfg.skipStartupCatchUp}
	r.logger = r.cfg.Logger.With("component", "replicator", "slot", r.cfg.Slot)
	return r.loop(ctx)
}

type runner struct {
	cfg         Config
	logger      *slog.Logger
	needCatchUp bool // on start and whenever the slot had to be created
	standingBy  bool
}

func (r *runner) loop(ctx context.Context) error {
	attempt := 0
	for {
		streamed, err := r.session(ctx)
		if ctx.Err() != nil {
			r.logger.Info("stopped")
			return nil
		}
		if permanent(err) {
			return err
		}
		if streamed {
			attempt = 0
		}
		attempt++
		delay := backoff(attempt, r.cfg.MaxBackoff)
		switch {
		case errors.Is(err, ErrSlotBusy):
			delay = backoff(attempt, min(r.cfg.MaxBackoff, standbyMaxDelay))
			if !r.standingBy {
				r.logger.Info("slot is in use by another instance; standing by to take over", "retry_in", delay.String())
			}
			r.standingBy = true
		default:
			r.logger.Warn("replication interrupted; reconnecting", "error", err, "attempt", attempt, "delay", delay.String())
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			r.logger.Info("stopped")
			return nil
		}
	}
}

// backoff is capped exponential with jitter: half fixed, half random, so a
// fleet restarted together does not reconnect in lockstep.
func backoff(attempt int, maxDelay time.Duration) time.Duration {
	d := 100 * time.Millisecond << min(attempt-1, 20)
	if d > maxDelay || d <= 0 {
		d = maxDelay
	}
	return d/2 + rand.N(d/2+1)
}

// session connects, checks, catches up if needed and streams until an error.
// streamed reports whether replication started, to reset the backoff.
func (r *runner) session(ctx context.Context) (streamed bool, err error) {
	conn, err := connectApply(ctx, r.cfg.DatabaseURL)
	if err != nil {
		return false, err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	senderTimeout, err := preflight(ctx, conn)
	if err != nil {
		return false, err
	}
	if err := ensurePublication(ctx, conn, r.cfg.Publication, r.logger); err != nil {
		return false, err
	}
	slot, created, err := ensureSlot(ctx, conn, r.cfg.Slot, r.logger)
	if err != nil {
		return false, err
	}
	if r.standingBy {
		r.logger.Info("slot is free; taking over")
		r.standingBy = false
	}
	gen, checkpoint, fresh, err := takeOwnership(ctx, conn, r.cfg.Slot, slot.ConfirmedFlush)
	if err != nil {
		return false, err
	}
	switch {
	case created && fresh:
		r.logger.Info("created replication slot", "publication", r.cfg.Publication)
	case created:
		r.logger.Warn("replication slot was missing (Neon drops slots idle ~40h and on branch restore); recreated it and folding what it missed from the outbox")
	}
	app := &applier{conn: conn, slot: r.cfg.Slot, generation: gen}
	if r.needCatchUp || created {
		if err := r.catchUp(ctx, conn, app, created && !fresh); err != nil {
			return false, err
		}
		r.needCatchUp = false
	}
	return r.stream(ctx, conn, app, max(checkpoint, slot.ConfirmedFlush), senderTimeout)
}

func (r *runner) stream(ctx context.Context, conn *pgx.Conn, app *applier, start pglogrepl.LSN, senderTimeout time.Duration) (bool, error) {
	repl, err := connectReplication(ctx, r.cfg.DatabaseURL)
	if err != nil {
		return false, err
	}
	defer func() { _ = repl.Close(context.WithoutCancel(ctx)) }()
	err = pglogrepl.StartReplication(ctx, repl, r.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", r.cfg.Publication)},
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55006" { // object_in_use: another walsender has the slot
		return false, ErrSlotBusy
	}
	if err != nil {
		return false, fmt.Errorf("start replication: %w", Explain(err))
	}
	s := &streamer{
		cfg:       r.cfg,
		logger:    r.logger,
		repl:      repl,
		app:       app,
		interval:  statusInterval(r.cfg.StatusInterval, senderTimeout),
		typeMap:   pgtype.NewMap(),
		relations: make(map[uint32]*relation),
	}
	s.confirmed.Store(uint64(start))
	r.logger.Info("streaming", "from", start.String(), "status_interval", s.interval.String())
	err = s.run(ctx)
	r.logger.Debug("stream ended", "folded", s.total.Folded, "rejected", s.total.Rejected, "skipped", s.total.Skipped)
	return true, err
}

// statusInterval is the configured interval, else the smaller of 10s and a
// third of wal_sender_timeout (0 disables the server's timeout).
func statusInterval(configured, senderTimeout time.Duration) time.Duration {
	if configured > 0 {
		return configured
	}
	d := 10 * time.Second
	if senderTimeout > 0 && senderTimeout/3 < d {
		d = senderTimeout / 3
	}
	return max(d, 100*time.Millisecond)
}
