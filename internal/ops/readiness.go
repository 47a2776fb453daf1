package ops

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Readiness is the body of /readyz and /healthz.
type Readiness struct {
	// Role is starting, active or standby.
	Role string `json:"role"`
	// Ready is true when this instance holds the slot, has caught up and
	// its apply lag is under the threshold.
	Ready bool `json:"ready"`
	// LagBytes and LagSeconds are the last sample from the server (null
	// before the first); see replicator.Lag.
	LagBytes   *int64   `json:"lag_bytes"`
	LagSeconds *float64 `json:"lag_seconds"`
	// Reason says why the instance is not ready.
	Reason string `json:"reason,omitempty"`
}

// Readiness reports whether this instance should receive traffic that
// needs users_sync current: it holds the slot, has finished any catch-up,
// and the last lag sample, no older than three intervals, is under
// ReadyMaxLag.
func (r *Replicator) Readiness() Readiness {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Readiness{Role: r.role}
	fresh := !r.sampledAt.IsZero() && time.Since(r.sampledAt) <= 3*r.cfg.SampleInterval
	if !r.sampledAt.IsZero() {
		b, s := r.lag.Bytes, r.lag.Seconds
		out.LagBytes, out.LagSeconds = &b, &s
	}
	switch {
	case r.role == RoleStandby:
		out.Reason = "another instance holds the slot"
	case r.role != RoleActive:
		out.Reason = "not holding the slot yet"
	case !r.caughtUp:
		out.Reason = "catching up with the outbox"
	case !fresh:
		out.Reason = "no recent lag sample from the server"
	case !r.lag.SlotExists:
		out.Reason = "the server does not show the slot yet"
	case r.lag.Seconds >= r.cfg.ReadyMaxLag.Seconds():
		out.Reason = fmt.Sprintf("apply lag %.1fs is over %s", r.lag.Seconds, r.cfg.ReadyMaxLag)
	default:
		out.Ready = true
	}
	return out
}

// Handler serves GET /metrics, /healthz (200 while the process runs) and
// /readyz (200 when Readiness is ready, else 503), the last two with the
// Readiness as JSON.
func (r *Replicator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.cfg.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, r.Readiness())
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		rd := r.Readiness()
		status := http.StatusOK
		if !rd.Ready {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, rd)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
