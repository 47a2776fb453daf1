package replicator

import (
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/usersync/usersync/outbox"
)

// outboxColumns are the columns of neon_auth.outbox the replicator reads, in
// the order of textRow.
var outboxColumns = [...]string{"id", "provider", "event_type", "payload", "event_id", "occurred_at", "received_at"}

// textRow is an outbox row in PostgreSQL's text format, as pgoutput sends it;
// the catch-up selects the same text so both paths share one parser. A nil
// element is SQL NULL.
type textRow [len(outboxColumns)][]byte

// sourceRecord is an outbox row with where it came from in the WAL; LSN is
// zero for rows folded by the catch-up.
type sourceRecord struct {
	outbox.Record
	LSN         uint64
	CommittedAt time.Time
}

// parseRecord converts a text row (session TimeZone=UTC, DateStyle=ISO).
func parseRecord(row *textRow, m *pgtype.Map) (outbox.Record, error) {
	var rec outbox.Record
	id, err := strconv.ParseInt(string(row[0]), 10, 64)
	if err != nil {
		return rec, fmt.Errorf("outbox.id %q: %w", row[0], err)
	}
	rec.ID = id
	rec.Provider = string(row[1])
	rec.EventType = string(row[2])
	rec.Payload = row[3]
	if row[4] != nil {
		s := string(row[4])
		rec.EventID = &s
	}
	if rec.OccurredAt, err = parseTimestamptz(m, row[5]); err != nil {
		return rec, fmt.Errorf("outbox.occurred_at of row %d: %w", id, err)
	}
	received, err := parseTimestamptz(m, row[6])
	if err != nil {
		return rec, fmt.Errorf("outbox.received_at of row %d: %w", id, err)
	}
	if received != nil {
		rec.ReceivedAt = *received
	}
	return rec, nil
}

// parseTimestamptz parses a timestamptz in text format. NULL and ±infinity
// (which no event time can be) become nil, so the fold falls back to the next
// source of the event time.
func parseTimestamptz(m *pgtype.Map, src []byte) (*time.Time, error) {
	if src == nil {
		return nil, nil
	}
	var ts pgtype.Timestamptz
	if err := m.Scan(pgtype.TimestamptzOID, pgtype.TextFormatCode, src, &ts); err != nil {
		return nil, err
	}
	if !ts.Valid || ts.InfinityModifier != pgtype.Finite {
		return nil, nil
	}
	t := ts.Time.UTC()
	return &t, nil
}
