package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/semaphore"

	"github.com/usersync/usersync/internal/logging"
	"github.com/usersync/usersync/outbox"
)

// Handler serves POST /webhooks/{clerk,stack,workos,generic} and GET /healthz.
type Handler struct {
	cfg       Config
	db        DB
	verifiers map[string]verifier
	// bodies bounds the bytes of the bodies being read at once;
	// bodiesHeld says how many are reserved now.
	bodies     *semaphore.Weighted
	bodiesHeld atomic.Int64
	mux        *http.ServeMux
	counts     counters
}

var _ http.Handler = (*Handler)(nil)

// DB is what the handler stores events through: a *pgxpool.Pool in
// production. Each insert runs in a transaction of its own.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// NewHandler returns a Handler storing events through db. Only cfg's
// Secrets, MaxBody, MaxBodyMemory, InsertTimeout, Tolerance, Logger and Now
// matter here.
func NewHandler(cfg Config, db DB) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	verifiers, err := cfg.verifiers()
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, db: db, verifiers: verifiers, bodies: semaphore.NewWeighted(cfg.MaxBodyMemory), mux: http.NewServeMux()}
	h.mux.HandleFunc("POST /webhooks/{provider}", h.serveWebhook)
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	if cfg.Metrics != nil {
		h.mux.Handle("GET /metrics", cfg.Metrics)
	}
	return h, nil
}

// ServeHTTP routes the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Stats returns the counts of answers given so far.
func (h *Handler) Stats() Stats { return h.counts.snapshot() }

// Outcomes of a delivery, as answered in the body's "outcome", logged and counted.
const (
	outcomeStored        = "stored"
	outcomeDuplicate     = "duplicate"
	outcomeIgnored       = "ignored"
	outcomeNotConfigured = "not_configured"
	outcomeTooLarge      = "too_large"
	outcomeUnauthorized  = "unauthorized"
	outcomeBadRequest    = "bad_request"
	outcomeUnavailable   = "unavailable"
	outcomeOverloaded    = "overloaded"
)

// Bounds of the sender-chosen values a log line quotes.
const (
	maxLoggedID     = 128
	maxLoggedType   = 64
	maxLoggedReason = 256
)

// result is the answer to one delivery and what the log line says about it.
type result struct {
	status    int
	outcome   string
	reason    string // sent to the sender and logged: never a secret, a signature or the body
	cause     error  // logged only: why the database failed
	eventType string
	eventID   string
	outboxID  int64
	// unread is set when the answer was decided before the body was read.
	unread bool
}

func (h *Handler) serveWebhook(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// Bounded: an unknown provider's name is chosen by whoever sends the request.
	provider := truncate(r.PathValue("provider"), 32)
	res := h.receive(w, r, provider)
	if res.unread {
		// Close rather than read a body nobody will use: net/http would
		// otherwise read up to 256 KiB of it before answering.
		w.Header().Set("Connection", "close")
	}
	h.counts.add(res.outcome)
	body := map[string]any{"outcome": res.outcome}
	if res.reason != "" {
		body["error"] = res.reason
	}
	if res.outboxID != 0 {
		body["outbox_id"] = res.outboxID
	}
	writeJSON(w, res.status, body)
	h.logResult(r.Context(), provider, res, time.Since(start))
	if h.cfg.Observer != nil {
		label := provider
		if !slices.Contains(Providers, provider) {
			label = "unknown" // sender-chosen: not a metric label
		}
		h.cfg.Observer.ObserveRequest(label, res.outcome, time.Since(start))
	}
}

func (h *Handler) receive(w http.ResponseWriter, r *http.Request, provider string) result {
	// Refuse what the headers alone condemn before reading any body.
	if !slices.Contains(Providers, provider) {
		return result{status: http.StatusNotFound, outcome: outcomeNotConfigured, reason: fmt.Sprintf("unknown provider %q: the endpoints are /webhooks/clerk, /webhooks/stack, /webhooks/workos and /webhooks/generic", provider), unread: true}
	}
	v := h.verifiers[provider]
	if v == nil {
		return result{status: http.StatusNotFound, outcome: outcomeNotConfigured, reason: fmt.Sprintf("no signing secret is configured for %s: set %s and restart the receiver", provider, SecretEnv(provider)), unread: true}
	}
	if r.ContentLength > h.cfg.MaxBody {
		res := h.tooLarge()
		res.unread = true
		return res
	}
	sig, err := v.parse(r.Header)
	if err != nil {
		return result{status: http.StatusUnauthorized, outcome: outcomeUnauthorized, reason: err.Error(), unread: true}
	}
	// A chunked body's length is unknown until read: count the most it may be.
	reserve := r.ContentLength
	if reserve < 0 {
		reserve = h.cfg.MaxBody
	}
	if !h.bodies.TryAcquire(reserve) {
		return result{status: http.StatusServiceUnavailable, outcome: outcomeOverloaded, reason: "too many deliveries are being received at once; retry later", unread: true}
	}
	h.bodiesHeld.Add(reserve)
	defer func() {
		h.bodiesHeld.Add(-reserve)
		h.bodies.Release(reserve)
	}()
	body, res, ok := h.readBody(w, r)
	if !ok {
		return res
	}
	if err := v.check(sig, body); err != nil {
		return result{status: http.StatusUnauthorized, outcome: outcomeUnauthorized, reason: err.Error()}
	}
	env, err := parseEnvelope(body, provider)
	if err != nil {
		return result{status: http.StatusBadRequest, outcome: outcomeBadRequest, reason: err.Error(), eventID: sig.id}
	}
	// The event id is a header (Svix), else the body's own (WorkOS).
	id := sig.id
	if id == "" {
		id = env.ID
	}
	res = result{eventType: env.Type, eventID: id}
	if env.Type != outbox.TypeCreated && env.Type != outbox.TypeUpdated && env.Type != outbox.TypeDeleted {
		// Acknowledged so that the provider does not retry it for days.
		res.status, res.outcome = http.StatusOK, outcomeIgnored
		return res
	}
	ev := outbox.NewEvent{Provider: provider, Type: env.Type, Payload: body, EventID: id, OccurredAt: h.occurredAt(env, id)}
	return h.store(r.Context(), ev, res)
}

func (h *Handler) tooLarge() result {
	return result{status: http.StatusRequestEntityTooLarge, outcome: outcomeTooLarge, reason: fmt.Sprintf("body larger than %d bytes", h.cfg.MaxBody)}
}

// readBody reads the body, at most MaxBody bytes. A declared length (at most
// MaxBody, checked before) is read into a buffer of exactly that size, so the
// memory held is what was reserved for it.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, result, bool) {
	var body []byte
	var err error
	if r.ContentLength >= 0 {
		// net/http's body reader ends at the declared length.
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, body)
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	}
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return nil, h.tooLarge(), false
	case err != nil:
		return nil, result{status: http.StatusBadRequest, outcome: outcomeBadRequest, reason: "could not read the body"}, false
	}
	return body, result{}, true
}

// logResult writes the request's one log line. It carries no header values
// other than the message id, and never the body.
func (h *Handler) logResult(ctx context.Context, provider string, res result, took time.Duration) {
	attrs := []slog.Attr{
		slog.String("provider", provider),
		slog.Int("status", res.status),
		slog.String("outcome", res.outcome),
	}
	if res.eventType != "" {
		attrs = append(attrs, slog.String("event_type", truncate(res.eventType, maxLoggedType)))
	}
	if res.eventID != "" {
		attrs = append(attrs, slog.String("event_id", truncate(res.eventID, maxLoggedID)))
	}
	if res.outboxID != 0 {
		attrs = append(attrs, slog.Int64("outbox_id", res.outboxID))
	}
	if res.outcome == outcomeIgnored {
		attrs = append(attrs, slog.Int64("ignored_total", h.counts.ignored.Load()))
	}
	if res.reason != "" {
		attrs = append(attrs, slog.String("reason", truncate(res.reason, maxLoggedReason)))
	}
	if res.cause != nil {
		attrs = append(attrs, slog.String("error", logging.Redact(res.cause.Error())))
	}
	attrs = append(attrs, slog.Duration("duration", took))
	level := slog.LevelInfo
	if res.status >= 400 {
		level = slog.LevelWarn
	}
	h.cfg.Logger.LogAttrs(ctx, level, "webhook", attrs...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// truncate bounds a sender-chosen string before it is logged.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}
