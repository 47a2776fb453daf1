package webhook

import (
	"log/slog"
	"sync/atomic"
)

// Stats counts the receiver's answers by outcome since it started.
type Stats struct {
	// Stored events were inserted into neon_auth.outbox.
	Stored int64
	// Duplicates were redeliveries of an event already stored.
	Duplicates int64
	// Ignored events were verified but are not user lifecycle events.
	Ignored int64
	// Unauthorized deliveries had a missing, stale or wrong signature.
	Unauthorized int64
	// BadRequests had a body that is not a JSON object with a string type, or that PostgreSQL cannot store.
	BadRequests int64
	// TooLarge bodies exceeded MaxBody.
	TooLarge int64
	// Unavailable deliveries got 503: the database could not take the insert.
	Unavailable int64
	// Overloaded deliveries got 503: MaxBodyMemory was taken by bodies being read.
	Overloaded int64
	// NotConfigured deliveries were for a provider without a secret, or an unknown one.
	NotConfigured int64
}

// counters is Stats updated concurrently by the handler.
type counters struct {
	stored, duplicates, ignored, unauthorized, badRequests, tooLarge, unavailable, overloaded, notConfigured atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Stored:        c.stored.Load(),
		Duplicates:    c.duplicates.Load(),
		Ignored:       c.ignored.Load(),
		Unauthorized:  c.unauthorized.Load(),
		BadRequests:   c.badRequests.Load(),
		TooLarge:      c.tooLarge.Load(),
		Unavailable:   c.unavailable.Load(),
		Overloaded:    c.overloaded.Load(),
		NotConfigured: c.notConfigured.Load(),
	}
}

func (c *counters) add(outcome string) {
	switch outcome {
	case outcomeStored:
		c.stored.Add(1)
	case outcomeDuplicate:
		c.duplicates.Add(1)
	case outcomeIgnored:
		c.ignored.Add(1)
	case outcomeUnauthorized:
		c.unauthorized.Add(1)
	case outcomeBadRequest:
		c.badRequests.Add(1)
	case outcomeTooLarge:
		c.tooLarge.Add(1)
	case outcomeUnavailable:
		c.unavailable.Add(1)
	case outcomeOverloaded:
		c.overloaded.Add(1)
	case outcomeNotConfigured:
		c.notConfigured.Add(1)
	}
}

// LogValue logs the counts under snake_case keys.
func (s Stats) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int64("stored", s.Stored),
		slog.Int64("duplicates", s.Duplicates),
		slog.Int64("ignored", s.Ignored),
		slog.Int64("unauthorized", s.Unauthorized),
		slog.Int64("bad_requests", s.BadRequests),
		slog.Int64("too_large", s.TooLarge),
		slog.Int64("unavailable", s.Unavailable),
		slog.Int64("overloaded", s.Overloaded),
		slog.Int64("not_configured", s.NotConfigured),
	)
}
