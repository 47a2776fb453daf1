package ops

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/usersync/usersync/outbox"
)

// replicatorMetrics are the metrics of `replicator run`, named as SPEC.md says.
type replicatorMetrics struct {
	applied         *prometheus.CounterVec
	rejected        prometheus.Counter
	replayedSkipped prometheus.Counter
	batchSeconds    prometheus.Histogram
	batchEvents     prometheus.Histogram
	commitToVisible prometheus.Histogram
	catchUpEvents   prometheus.Counter
	slotLagBytes    prometheus.Gauge
	confirmedLSN    prometheus.Gauge
	applyLagSeconds prometheus.Gauge
	active          prometheus.Gauge
	reconnects      prometheus.Counter
}

// operations are the history operations, each exported from the start so
// that a rate over them is defined before the first event.
var operations = []outbox.Operation{outbox.OpInsert, outbox.OpUpdate, outbox.OpDelete, outbox.OpStale, outbox.OpResync, outbox.OpForgotten}

func newReplicatorMetrics(reg prometheus.Registerer) *replicatorMetrics {
	m := &replicatorMetrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "usersync_events_applied_total", Help: "Outbox events folded into users_sync, by the history operation recorded.",
		}, []string{"operation"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "usersync_events_rejected_total", Help: "Outbox events that could not be folded (rows written to outbox_rejects).",
		}),
		replayedSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "usersync_events_replayed_skipped_total", Help: "Events received again (a replay after a crash, catch-up and stream overlapping) and skipped as already accounted for.",
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "usersync_apply_batch_seconds", Help: "Time to apply one batch, commit included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		batchEvents: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "usersync_apply_batch_events", Help: "Outbox events per applied batch.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000},
		}),
		commitToVisible: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "usersync_commit_to_visible_seconds", Help: "Time from the outbox transaction's commit to the commit of its apply (streamed events).",
			Buckets: prometheus.ExponentialBuckets(0.002, 2.5, 14),
		}),
		catchUpEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "usersync_catchup_events_total", Help: "Outbox events folded or rejected by the catch-up (backfill and recovery after a lost slot).",
		}),
		slotLagBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "usersync_slot_lag_bytes", Help: "Server WAL end minus the slot's confirmed position, sampled from the server.",
		}),
		confirmedLSN: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "usersync_confirmed_lsn", Help: "The slot's confirmed_flush_lsn as a number, sampled from the server.",
		}),
		applyLagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "usersync_apply_lag_seconds", Help: "Age of the oldest outbox row not yet folded (0 when none), sampled from the server; /readyz compares it with --ready-max-lag.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "usersync_active", Help: "1 while this instance holds the replication slot, else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "usersync_reconnects_total", Help: "Sessions that ended in an error and were retried (standing by is not counted).",
		}),
	}
	reg.MustRegister(m.applied, m.rejected, m.replayedSkipped, m.batchSeconds, m.batchEvents, m.commitToVisible,
		m.catchUpEvents, m.slotLagBytes, m.confirmedLSN, m.applyLagSeconds, m.active, m.reconnects)
	for _, op := range operations {
		m.applied.WithLabelValues(string(op))
	}
	return m
}
