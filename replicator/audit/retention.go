package audit

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// RetentionConfig configures RunRetention.
type RetentionConfig struct {
	// DatabaseURL is the database to prune.
	DatabaseURL string
	// Prune says what to delete; OutboxOlderThan must be positive.
	Prune PruneConfig
	// Interval is the time between prunes (default 1h).
	Interval time.Duration
	// Logger receives one line per prune (default: discard).
	Logger *slog.Logger
}

// RunRetention prunes at once and then every cfg.Interval until ctx is
// cancelled, and returns nil then. A prune that fails is logged and tried
// again at the next interval: retention must never stop the replicator.
func RunRetention(ctx context.Context, cfg RetentionConfig) error {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	logger := cfg.Logger.With("component", "retention")
	for {
		started := time.Now()
		report, err := pruneOnce(ctx, cfg)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			logger.Warn("prune failed; trying again at the next interval", "error", err, "next_in", cfg.Interval.String())
		default:
			attrs := []any{"outbox_deleted", report.Outbox.Deleted, "outbox_kept", report.Outbox.Kept,
				"cutoff", report.Outbox.Cutoff.Format(time.RFC3339), "took", time.Since(started).Round(time.Millisecond).String()}
			if report.History != nil {
				attrs = append(attrs, "history_deleted", report.History.Deleted, "history_kept", report.History.Kept)
			}
			logger.Info("pruned the outbox", attrs...)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(cfg.Interval):
		}
	}
}

func pruneOnce(ctx context.Context, cfg RetentionConfig) (PruneReport, error) {
	pcfg, err := pgx.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return PruneReport{}, err
	}
	pcfg.RuntimeParams["application_name"] = "usersync-retention"
	conn, err := pgx.ConnectConfig(ctx, pcfg)
	if err != nil {
		return PruneReport{}, err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	return Prune(ctx, conn, cfg.Prune)
}
