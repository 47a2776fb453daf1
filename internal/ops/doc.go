// Package ops serves what operators watch: Prometheus metrics for `run`
// and `ingest` (github.com/prometheus/client_golang), the lag sampled from
// the server, and the /healthz and /readyz answers of `run --http`.
package ops
