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
	streamed    bool // a session of this process has streamed
}

func (r *runner) loop(ctx context.Context) error {
	attempt, wasBusy := 0, false
	for {
		progress, err := r.session(ctx)
		r.cfg.Observer.SessionEnded(err)
		if ctx.Err() != nil {
			r.logger.Info("stopped")
			return nil
		}
		if permanent(err) && !(r.streamed && errors.Is(err, errPublicationUnusable)) {
			return err
		}
		busy := errors.Is(err, ErrSlotBusy)
		if progress || (wasBusy && !busy) { // a fresh start once the slot came free
			attempt = 0
		}
		wasBusy = busy
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

// session connects, checks, takes the slot, catches up if owed and streams
// until an error. progress reports whether it got anywhere, to reset the
// backoff: a session that fails the same way at once is retried ever slower.
func (r *runner) session(ctx context.Context) (progress bool, err error) {
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
	publication, err := publicationIdentity(ctx, conn, r.cfg.Publication)
	if err != nil {
		return false, err
	}
	repl, err := connectReplication(ctx, r.cfg.DatabaseURL)
	if err != nil {
		return false, err
	}
	defer func() { _ = repl.Close(context.WithoutCancel(ctx)) }()
	st, err := prepareSlot(ctx, conn, repl, r.cfg.Slot, publication, r.logger)
	if err != nil {
		return false, err
	}
	var reader *pgx.Conn // set when the slot was created: reads under its snapshot
	if st.Created {
		if reader, err = openSnapshotReader(ctx, r.cfg.DatabaseURL, st.Snapshot); err != nil {
			return false, err
		}
		defer func() { _ = reader.Close(context.WithoutCancel(ctx)) }()
	}
	if err := r.startReplication(ctx, repl, st.LSN); err != nil {
		return false, err
	}
	r.cfg.Observer.SlotHeld(true)
	defer r.cfg.Observer.SlotHeld(false)
	// From here on this instance holds the slot: only now may it fence others.
	if r.standingBy {
		r.logger.Info("slot is free; taking over")
		r.standingBy = false
	}
	app := &applier{conn: conn, slot: r.cfg.Slot}
	s := &streamer{
		cfg:         r.cfg,
		logger:      r.logger,
		repl:        repl,
		app:         app,
		interval:    statusInterval(r.cfg.StatusInterval, senderTimeout),
		publication: publication,
		typeMap:     pgtype.NewMap(),
		relations:   make(map[uint32]*relation),
	}
	start := st.LSN
	s.confirmed.Store(uint64(start))
	// Taking ownership may wait on the row lock of an instance paused mid-apply,
	// and the catch-up may take long: both run once the reader answers the
	// walsender, so that neither can make it time out.
	prepare := func(ctx context.Context) error {
		ck, err := takeOwnership(ctx, conn, r.cfg.Slot, st.ResetCheckpoint, st.LSN, r.logger)
		if err != nil {
			return err
		}
		app.generation = ck.Generation
		app.replayUntil = uint64(ck.LSN)
		if err := recordPublication(ctx, conn, r.cfg.Slot, ck.Generation, publication); err != nil {
			return err
		}
		switch {
		case st.Created && ck.Fresh:
			r.logger.Info("created replication slot", "publication", r.cfg.Publication)
		case st.Created && !st.Recreated:
			r.logger.Warn("replication slot was missing (Neon drops slots idle ~40h and on branch restore); recreated it and folding what it missed from the outbox")
		}
		if !r.needCatchUp && !st.Created && !ck.owesCatchUp() {
			return nil
		}
		if err := r.catchUp(ctx, app, reader, st.Created && !ck.Fresh); err != nil {
			return err
		}
		// A debt found here by an instance that did not create the slot is
		// one a failed creation recorded: prepareSlot would have seen any
		// real one (a creation records its debt first) and recreated the
		// slot. So the catch-up just done pays it.
		if err := markCaughtUp(ctx, conn, r.cfg.Slot, ck.Generation, ck.CatchUpEpoch); err != nil {
			return err
		}
		r.needCatchUp = false
		return nil
	}
	began := time.Now()
	err = s.run(ctx, func(ctx context.Context) error {
		if err := prepare(ctx); err != nil {
			return err
		}
		r.cfg.Observer.CaughtUp()
		r.streamed = true
		r.logger.Info("streaming", "from", start.String(), "status_interval", s.interval.String())
		return nil
	})
	r.logger.Debug("stream ended", "folded", s.total.Folded, "rejected", s.total.Rejected, "skipped", s.total.Skipped)
	progress = s.total.Folded+s.total.Rejected > 0 || s.confirmed.Load() > uint64(start) || time.Since(began) > time.Minute
	return progress, err
}

// startReplication starts streaming the slot on repl from start; the slot
// is then ours until the connection closes.
func (r *runner) startReplication(ctx context.Context, repl *pgconn.PgConn, start pglogrepl.LSN) error {
	err := pglogrepl.StartReplication(ctx, repl, r.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", r.cfg.Publication)},
	})
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55006" { // object_in_use: another walsender has the slot
		return ErrSlotBusy
	}
	if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object: dropped by a racing instance
		return ErrSlotBusy
	}
	return fmt.Errorf("start replication: %w", Explain(err))
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
