package ops

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/usersync/usersync/replicator"
)

// Roles of a `replicator run` instance, as /readyz reports them.
const (
	RoleStarting = "starting" // connecting, or reconnecting after an error
	RoleActive   = "active"   // holds the slot
	RoleStandby  = "standby"  // another instance holds the slot
)

// ReplicatorConfig configures NewReplicator. Zero fields take the defaults.
type ReplicatorConfig struct {
	// Registry receives the metrics (default: NewRegistry()).
	Registry *prometheus.Registry
	// ReadyMaxLag is the apply lag above which /readyz answers 503 (default 30s).
	ReadyMaxLag time.Duration
	// SampleInterval is how often the lag is read from the server (default 5s).
	SampleInterval time.Duration
}

// Replicator is the operational state of one `replicator run`: it is the
// replicator.Observer, samples the lag from the server (RunSampler) and
// serves /metrics, /healthz and /readyz (Handler).
type Replicator struct {
	cfg ReplicatorConfig
	m   *replicatorMetrics

	mu        sync.Mutex
	role      string
	caughtUp  bool
	lag       replicator.Lag
	sampledAt time.Time
}

var _ replicator.Observer = (*Replicator)(nil)

// NewReplicator registers the replicator's metrics.
func NewReplicator(cfg ReplicatorConfig) *Replicator {
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry()
	}
	if cfg.ReadyMaxLag <= 0 {
		cfg.ReadyMaxLag = 30 * time.Second
	}
	if cfg.SampleInterval <= 0 {
		cfg.SampleInterval = 5 * time.Second
	}
	return &Replicator{cfg: cfg, m: newReplicatorMetrics(cfg.Registry), role: RoleStarting}
}

// BatchApplied counts a committed batch.
func (r *Replicator) BatchApplied(b replicator.BatchStats) {
	for op, n := range b.Applied {
		r.m.applied.WithLabelValues(string(op)).Add(float64(n))
	}
	r.m.rejected.Add(float64(b.Rejected))
	r.m.replayedSkipped.Add(float64(b.Skipped))
	r.m.batchSeconds.Observe(b.Duration.Seconds())
	r.m.batchEvents.Observe(float64(b.Events))
	for _, at := range b.SourceCommits {
		r.m.commitToVisible.Observe(max(b.CommittedAt.Sub(at).Seconds(), 0))
	}
	if b.CatchUp {
		applied := 0
		for _, n := range b.Applied {
			applied += n
		}
		r.m.catchUpEvents.Add(float64(applied + b.Rejected))
	}
}

// SlotHeld records whether this instance holds the slot.
func (r *Replicator) SlotHeld(held bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.caughtUp = false
	if held {
		r.role = RoleActive
		r.m.active.Set(1)
		return
	}
	r.role = RoleStarting
	r.m.active.Set(0)
}

// CaughtUp records that the active session finished its catch-up.
func (r *Replicator) CaughtUp() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.caughtUp = true
}

// SessionEnded records a standby or a reconnect.
func (r *Replicator) SessionEnded(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case errors.Is(err, replicator.ErrSlotBusy):
		r.role = RoleStandby
	case err != nil:
		r.role = RoleStarting
		r.m.reconnects.Inc()
	}
}

// setLag records a lag sample.
func (r *Replicator) setLag(lag replicator.Lag) {
	r.m.slotLagBytes.Set(float64(lag.Bytes))
	r.m.confirmedLSN.Set(float64(lag.ConfirmedLSN))
	r.m.applyLagSeconds.Set(lag.Seconds)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lag, r.sampledAt = lag, time.Now()
}
