package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// liveResult is the live figure at one offered rate.
type liveResult struct {
	Rate int
	// Achieved is the measured events over the measuring window.
	Achieved float64
	// LatenciesMS are the commit-to-visible latencies of the measured
	// events, sorted: the commit time of the history row minus that of the
	// outbox row, from track_commit_timestamp.
	LatenciesMS []float64
	// MaxLateMS is how far behind its schedule the load generator fell at
	// worst: a large value means the offered load was not the rate.
	MaxLateMS float64
}

// percentile returns the nearest-rank q-quantile of the sorted latencies.
func (l liveResult) percentile(q float64) float64 {
	if len(l.LatenciesMS) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(l.LatenciesMS)))) - 1
	return l.LatenciesMS[min(max(i, 0), len(l.LatenciesMS)-1)]
}

// live offers each rate in turn to the running replicator, then stops it.
func (b *bench) live(ctx context.Context, p *replicatorProcess) error {
	conn, err := connect(ctx, b.cluster.URL(replicatorDB))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	// Start from an idle replicator: its slot past the drain's own writes.
	lsn, err := currentLSN(ctx, conn)
	if err != nil {
		return err
	}
	if err := waitSent(ctx, conn, p, lsn); err != nil {
		return err
	}
	for i, r := range b.o.Rates {
		b.logf("live: %d ev/s from %d connections, %s warm-up then %s measured", r, b.o.Clients, b.o.Warmup, b.o.LiveDuration)
		lr, err := b.offer(ctx, conn, p, r, uint64(i))
		if err != nil {
			return err
		}
		b.res.Live = append(b.res.Live, lr)
		b.logf("live: %d ev/s offered, %.0f achieved: p50 %.1f ms, p99 %.1f ms, max %.1f ms",
			r, lr.Achieved, lr.percentile(0.5), lr.percentile(0.99), lr.percentile(1))
	}
	rss, err := p.stop()
	if err != nil {
		return err
	}
	b.res.RSS = append(b.res.RSS, rssRun{Run: "drain and live", KB: rss})
	return nil
}

// offered tracks what the load generator's workers did.
type offered struct {
	mu                 sync.Mutex
	firstID, lastID    int64 // of the measured events
	maxID              int64 // of all events, warm-up included
	lastDone           time.Time
	maxLate            time.Duration
	measuredCommitted  int
	measureFrom        time.Time
	warmEvents, events int
}

func (o *offered) record(id int64, measured bool, late time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.maxID = max(o.maxID, id)
	if !measured {
		return
	}
	if o.firstID == 0 || id < o.firstID {
		o.firstID = id
	}
	o.lastID = max(o.lastID, id)
	o.lastDone = time.Now()
	o.maxLate = max(o.maxLate, late)
	o.measuredCommitted++
}

const liveInsertSQL = `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at)
	VALUES ('clerk', $1, $2, $3, $4) RETURNING id`

// offer inserts one-row transactions at perSecond from the configured number of
// connections on an open-loop schedule (event k is due at start + k/rate,
// whatever happened to the events before it), waits until all are folded,
// and reads the measured events' latencies.
func (b *bench) offer(ctx context.Context, conn *pgx.Conn, p *replicatorProcess, perSecond int, round uint64) (liveResult, error) {
	period := time.Second / time.Duration(perSecond)
	o := &offered{
		warmEvents: int(math.Round(float64(perSecond) * b.o.Warmup.Seconds())),
		events:     int(math.Round(float64(perSecond) * (b.o.Warmup + b.o.LiveDuration).Seconds())),
	}
	start := time.Now().Add(200 * time.Millisecond)
	o.measureFrom = start.Add(time.Duration(o.warmEvents) * period)
	g, gctx := errgroup.WithContext(ctx)
	for w := range b.o.Clients {
		gen := b.gen.fork(b.o.Seed + 1000*round + uint64(w))
		g.Go(func() error {
			c, err := connect(gctx, b.cluster.URL(replicatorDB))
			if err != nil {
				return err
			}
			defer c.Close(context.WithoutCancel(gctx))
			for k := w; k < o.events; k += b.o.Clients {
				due := start.Add(time.Duration(k) * period)
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
				}
				late := time.Since(due)
				ev := gen.eventAt(time.Now())
				measured := k >= o.warmEvents
				kind := "warm"
				if measured {
					kind = "live"
				}
				var id int64
				if err := c.QueryRow(gctx, liveInsertSQL, ev.EventType, json.RawMessage(ev.Payload),
					fmt.Sprintf("%s:%d:%d", kind, perSecond, k), ev.OccurredAt).Scan(&id); err != nil {
					return fmt.Errorf("insert: %w", err)
				}
				o.record(id, measured, late)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return liveResult{}, err
	}
	lr := liveResult{Rate: perSecond, MaxLateMS: ms(o.maxLate)}
	if measured := o.events - o.warmEvents; measured > 0 {
		lr.Achieved = rate(o.measuredCommitted, o.lastDone.Sub(o.measureFrom))
	}
	if _, err := waitAccounted(ctx, conn, p, o.maxID, timeout(o.events)); err != nil {
		return lr, err
	}
	var err error
	lr.LatenciesMS, err = latencies(ctx, conn, o.firstID, o.lastID, fmt.Sprintf("live:%d:%%", perSecond))
	if err != nil {
		return lr, err
	}
	if len(lr.LatenciesMS) != o.measuredCommitted {
		return lr, fmt.Errorf("%d measured events were committed but %d have a history row", o.measuredCommitted, len(lr.LatenciesMS))
	}
	return lr, nil
}

// latencies reads, for the outbox rows in [first, last] whose event_id is
// like pattern, the time from the outbox row's commit to its history row's
// commit, sorted.
func latencies(ctx context.Context, conn *pgx.Conn, first, last int64, pattern string) ([]float64, error) {
	rows, _ := conn.Query(ctx, `SELECT 1000 * extract(epoch FROM pg_xact_commit_timestamp(h.xmin) - pg_xact_commit_timestamp(o.xmin))::float8
		FROM neon_auth.outbox o JOIN neon_auth.users_sync_history h ON h.outbox_id = o.id
		WHERE o.id BETWEEN $1 AND $2 AND o.event_id LIKE $3`, first, last, pattern)
	out, err := pgx.CollectRows(rows, pgx.RowTo[float64])
	if err != nil {
		return nil, fmt.Errorf("read latencies: %w", err)
	}
	slices.Sort(out)
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
