package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox/webhook"
)

// loadStats counts what the writers and the deliverer did.
type loadStats struct {
	committed, duplicates, malformed, largeTx, txFailed atomic.Int64
	delivered, redelivered, deliveryRetries             atomic.Int64
}

// writer inserts events straight into the outbox, as an application does
// in its own transactions: one to six rows, now and then a large
// transaction, some redelivered event ids (a no-op insert). It reconnects
// while the server restarts under it.
func writer(ctx context.Context, url string, id int, gen *eventGen, st *loadStats) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var ids []string // event ids committed, to redeliver
	for seq := 0; ctx.Err() == nil; seq++ {
		if conn == nil {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				pause(ctx, 200*time.Millisecond)
				continue
			}
			conn = c
		}
		n := 1 + gen.rng.IntN(6)
		large := gen.rng.IntN(400) == 0
		if large {
			n = 500 + gen.rng.IntN(2500)
		}
		type row struct {
			ev      newEvent
			eventID *string
		}
		rows := make([]row, n)
		for i := range rows {
			rows[i].ev = gen.next()
			switch r := gen.rng.IntN(100); {
			case r < 5 && len(ids) > 0: // a redelivery: the same provider and event id
				old := ids[gen.rng.IntN(len(ids))]
				rows[i].ev.Provider, rows[i].eventID = providerOf(old), ptr(eventIDOf(old))
			case r < 85:
				rows[i].eventID = ptr(fmt.Sprintf("soak-w%d-%d-%d", id, seq, i))
			}
		}
		var inserted, dups, malformed int64
		ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		err := pgx.BeginFunc(ictx, conn, func(tx pgx.Tx) error {
			inserted, dups, malformed = 0, 0, 0
			for _, r := range rows {
				tag, err := tx.Exec(ictx, `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at)
					VALUES ($1, $2, $3::jsonb, $4, $5) ON CONFLICT (provider, event_id) DO NOTHING`,
					r.ev.Provider, r.ev.Type, string(r.ev.Payload), r.eventID, r.ev.OccurredAt)
				if err != nil {
					return err
				}
				if tag.RowsAffected() == 0 {
					dups++
				} else {
					inserted++
					if r.ev.Malformed {
						malformed++
					}
				}
			}
			return nil
		})
		cancel()
		if err != nil {
			st.txFailed.Add(1)
			_ = conn.Close(context.WithoutCancel(ctx))
			conn = nil
			pause(ctx, 100*time.Millisecond)
			continue
		}
		st.committed.Add(inserted)
		st.duplicates.Add(dups)
		st.malformed.Add(malformed)
		if large {
			st.largeTx.Add(1)
		}
		for _, r := range rows {
			if r.eventID != nil && len(ids) < 10000 {
				ids = append(ids, r.ev.Provider+"\x00"+*r.eventID)
			}
		}
		pause(ctx, time.Duration(20+gen.rng.IntN(60))*time.Millisecond)
	}
}

func providerOf(key string) string { p, _, _ := cut(key); return p }
func eventIDOf(key string) string  { _, id, _ := cut(key); return id }

func cut(key string) (string, string, bool) {
	for i := range len(key) {
		if key[i] == 0 {
			return key[:i], key[i+1:], true
		}
	}
	return key, "", false
}

func ptr[T any](v T) *T { return &v }

// pause sleeps for d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// delivery is one signed webhook message.
type delivery struct {
	provider, id string
	body         []byte
}

// deliverer posts signed webhooks to the running `replicator ingest`, as
// Svix does: it retries until a 2xx (a 503 while PostgreSQL restarts), and
// redelivers some messages that were already acknowledged. Every
// acknowledged message must end up in the outbox.
type deliverer struct {
	url   string // http://host:port of ingest
	keys  map[string][]byte
	gen   *eventGen
	st    *loadStats
	mu    sync.Mutex
	acked map[string]delivery // by provider and message id
}

func (d *deliverer) run(ctx context.Context) {
	client := &http.Client{Timeout: 15 * time.Second}
	var sent []delivery
	for seq := 0; ctx.Err() == nil; seq++ {
		var m delivery
		if len(sent) > 0 && d.gen.rng.IntN(10) == 0 {
			m = sent[d.gen.rng.IntN(len(sent))] // a redelivery of an acknowledged message
			d.st.redelivered.Add(1)
		} else {
			m = d.newMessage(seq)
		}
		for attempt := 0; ctx.Err() == nil; attempt++ {
			if attempt > 0 {
				d.st.deliveryRetries.Add(1)
				pause(ctx, time.Duration(min(attempt, 20))*100*time.Millisecond)
			}
			if d.post(ctx, client, m) {
				d.mu.Lock()
				d.acked[m.provider+"\x00"+m.id] = m
				d.mu.Unlock()
				d.st.delivered.Add(1)
				if len(sent) < 5000 {
					sent = append(sent, m)
				}
				break
			}
		}
		pause(ctx, time.Duration(20+d.gen.rng.IntN(60))*time.Millisecond)
	}
}

// newMessage makes a well-formed webhook body: the providers' envelopes,
// and the same envelope around a generic user object.
func (d *deliverer) newMessage(seq int) delivery {
	var ev newEvent
	for ev = d.gen.next(); ev.Malformed; ev = d.gen.next() {
	}
	body := ev.Payload
	id := fmt.Sprintf("msg_soak%08d%04d", seq, d.gen.rng.IntN(10000))
	switch ev.Provider {
	case "generic":
		var user map[string]any
		_ = json.Unmarshal(ev.Payload, &user)
		body, _ = json.Marshal(map[string]any{"type": ev.Type, "data": user})
	case "workos": // the event id is the envelope's "id"
		var env map[string]any
		_ = json.Unmarshal(ev.Payload, &env)
		id = fmt.Sprintf("event_soak%08d%04d", seq, d.gen.rng.IntN(10000))
		env["id"] = id
		body, _ = json.Marshal(env)
	}
	return delivery{provider: ev.Provider, id: id, body: body}
}

// post delivers m once and reports whether it was acknowledged (2xx).
func (d *deliverer) post(ctx context.Context, client *http.Client, m delivery) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url+"/webhooks/"+m.provider, bytes.NewReader(m.body))
	if err != nil {
		return false
	}
	now := time.Now()
	req.Header.Set("content-type", "application/json")
	if m.provider == "workos" {
		req.Header.Set("WorkOS-Signature", webhook.SignWorkOS(d.keys[m.provider], now, m.body))
	} else {
		req.Header.Set("svix-id", m.id)
		req.Header.Set("svix-timestamp", strconv.FormatInt(now.Unix(), 10))
		req.Header.Set("svix-signature", webhook.Sign(d.keys[m.provider], m.id, now, m.body))
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode/100 == 2
}

func (d *deliverer) ackedMessages() []delivery {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]delivery, 0, len(d.acked))
	for _, m := range d.acked {
		out = append(out, m)
	}
	return out
}

// newRand makes one of the soak's random streams from the seed.
func newRand(seed uint64, stream uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, stream)) }
