package ops

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/replicator"
)

// RunSampler reads the lag of slot from the server every SampleInterval
// until ctx is cancelled, on a connection of its own (reconnected when
// lost), and returns nil then. Sampling, rather than measuring per event,
// keeps the apply path free of it and makes the figures the server's.
func (r *Replicator) RunSampler(ctx context.Context, databaseURL, slot string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "lag-sampler")
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var frontier int64
	failing := false
	for {
		var err error
		if conn == nil || conn.IsClosed() {
			conn, err = connectSampler(ctx, databaseURL)
		}
		if err == nil {
			var lag replicator.Lag
			if lag, err = replicator.ReadLag(ctx, conn, slot, frontier); err == nil {
				frontier = lag.Frontier
				r.setLag(lag)
			}
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			logger.Warn("cannot read the lag from the server; /readyz answers 503 until it can", "error", err)
		case err == nil && failing:
			logger.Info("reading the lag again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.SampleInterval):
		}
	}
}

func connectSampler(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["application_name"] = "usersync-lag-sampler"
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return pgx.ConnectConfig(cctx, cfg)
}
