package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// backfillResult is the backfill figure: the same outbox folded by the
// replicator's catch-up and by the set-based reference.
type backfillResult struct {
	Events int
	// Replicator is from the process's start to every row accounted for.
	Replicator time.Duration
	// LoggedTook is the took of the replicator's "caught up with the outbox" line.
	LoggedTook string
	// Reference is the reference transaction, commit included.
	Reference time.Duration
	// PayloadBytes is the average payload size.
	PayloadBytes int64
	// Operations counts the replicator's history rows by operation.
	Operations map[string]int
	Check      referenceCheck
}

// backfill loads identical outboxes into two fresh databases, folds one
// with the set-based reference and the other with `replicator run` (which
// creates the slot and catches up), and compares the results.
func (b *bench) backfill(ctx context.Context) error {
	n := b.o.events()
	res := &b.res.Backfill
	res.Events = n
	rep, err := b.createDatabase(ctx, replicatorDB)
	if err != nil {
		return err
	}
	defer rep.Close(ctx)
	ref, err := b.createDatabase(ctx, referenceDB)
	if err != nil {
		return err
	}
	defer ref.Close(ctx)

	b.logf("loading %d Clerk events over %d users into both databases", n, b.o.users())
	workload := b.workload()
	b.gen = newGenerator(workload)
	bytes, err := loadOutbox(ctx, rep, b.gen, n)
	if err != nil {
		return err
	}
	res.PayloadBytes = bytes / int64(n)
	if _, err := loadOutbox(ctx, ref, newGenerator(workload), n); err != nil {
		return err
	}
	for _, conn := range []*pgx.Conn{rep, ref} {
		// Both start from a table with statistics and hint bits set.
		if _, err := conn.Exec(ctx, "VACUUM ANALYZE neon_auth.outbox"); err != nil {
			return fmt.Errorf("vacuum outbox: %w", err)
		}
	}

	b.logf("reference: one set-based SQL transaction")
	if err := checkpoint(ctx, ref); err != nil {
		return err
	}
	if res.Reference, err = runReference(ctx, ref); err != nil {
		return err
	}
	b.logf("reference: %d events in %s (%.0f ev/s)", n, res.Reference.Round(time.Millisecond), rate(n, res.Reference))

	b.logf("replicator: backfill")
	if err := checkpoint(ctx, rep); err != nil {
		return err
	}
	p, err := startReplicator(b.bin, b.cluster.URL(replicatorDB), filepath.Join(b.work, "backfill.log"))
	if err != nil {
		return err
	}
	defer p.kill()
	seen, err := waitAccounted(ctx, rep, p, int64(n), timeout(n))
	if err != nil {
		return err
	}
	res.Replicator = seen.Sub(p.started)
	if res.LoggedTook, err = p.caughtUp(ctx, 30*time.Second); err != nil {
		return err
	}
	b.logf("replicator: %d events in %s (%.0f ev/s; logged catch-up took %s)",
		n, res.Replicator.Round(time.Millisecond), rate(n, res.Replicator), res.LoggedTook)
	// Let the slot pass the catch-up's own writes before stopping, so that
	// the drain's twin slot is created where the replicator's slot stands.
	lsn, err := currentLSN(ctx, rep)
	if err != nil {
		return err
	}
	if err := waitSent(ctx, rep, p, lsn); err != nil {
		return err
	}
	rss, err := p.stop()
	if err != nil {
		return err
	}
	b.res.RSS = append(b.res.RSS, rssRun{Run: "backfill", KB: rss})

	if res.Operations, err = countOperations(ctx, rep); err != nil {
		return err
	}
	b.logf("comparing the replicator's results with the reference's")
	if res.Check, err = compareResults(ctx, rep, ref); err != nil {
		return err
	}
	for _, t := range res.Check.Tables {
		if t.FirstDifference != "" {
			b.logf("reference check: %s", t.FirstDifference)
		}
	}
	return nil
}

func countOperations(ctx context.Context, conn *pgx.Conn) (map[string]int, error) {
	rows, _ := conn.Query(ctx, "SELECT operation, count(*) FROM neon_auth.users_sync_history GROUP BY 1")
	ops := make(map[string]int)
	var op string
	var count int
	_, err := pgx.ForEachRow(rows, []any{&op, &count}, func() error { ops[op] = count; return nil })
	if err != nil {
		return nil, fmt.Errorf("count history operations: %w", err)
	}
	return ops, nil
}

// rate is events per second.
func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
