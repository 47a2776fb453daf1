package ops

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/usersync/usersync/outbox/webhook"
)

// Webhook is the metrics of `replicator ingest`.
type Webhook struct {
	requests *prometheus.CounterVec
	seconds  prometheus.Histogram
}

var _ webhook.RequestObserver = (*Webhook)(nil)

// NewWebhook registers the receiver's metrics on reg.
func NewWebhook(reg prometheus.Registerer) *Webhook {
	w := &Webhook{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "usersync_webhook_requests_total", Help: "Webhook deliveries answered, by provider endpoint and outcome.",
		}, []string{"provider", "outcome"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "usersync_webhook_request_seconds", Help: "Time to answer a webhook delivery, insert included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
	}
	reg.MustRegister(w.requests, w.seconds)
	return w
}

// ObserveRequest counts one delivery.
func (w *Webhook) ObserveRequest(provider, outcome string, took time.Duration) {
	w.requests.WithLabelValues(provider, outcome).Inc()
	w.seconds.Observe(took.Seconds())
}
