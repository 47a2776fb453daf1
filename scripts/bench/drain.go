package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// drainResult is the drain figure: one-row transactions queued in the slot
// while the replicator was stopped, decoded by the restarted replicator and
// by pg_recvlogical from a twin slot.
type drainResult struct {
	Events int
	// Replicator is from the process's start to every row accounted for.
	Replicator time.Duration
	// Streamed is from the process's start to the checkpoint passing the
	// last queued transaction: the slot itself drained.
	Streamed time.Duration
	// Recvlogical is pg_recvlogical's run from the twin slot to the WAL end
	// after the inserts; zero when RecvlogicalMissing says why not.
	Recvlogical        time.Duration
	RecvlogicalMissing string
	// SlotGapBytes is how far the replicator's slot stood behind the twin
	// when the twin was created.
	SlotGapBytes int64
	// Inserting is how long committing the transactions took.
	Inserting time.Duration
}

const twinSlot = "bench_twin"

// drain stops nothing itself: the backfill left the replicator stopped with
// its slot at the WAL end. It creates the twin slot there, commits the
// one-row transactions, times pg_recvlogical on the twin, then starts the
// replicator (whose start-up catch-up sweep runs as usual) and times it. It
// returns the replicator, still running, for the live phase.
func (b *bench) drain(ctx context.Context) (*replicatorProcess, error) {
	n := b.o.events()
	res := &b.res.Drain
	res.Events = n
	conn, err := connect(ctx, b.cluster.URL(replicatorDB))
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	if err := stageEvents(ctx, conn, b.gen, n); err != nil {
		return nil, err
	}
	if err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff(t.lsn, s.confirmed_flush_lsn)::int8
		FROM pg_create_logical_replication_slot($1, 'pgoutput') t, pg_replication_slots s
		WHERE s.slot_name = $2`, twinSlot, slotName).Scan(&res.SlotGapBytes); err != nil {
		return nil, fmt.Errorf("create twin slot: %w", err)
	}
	b.logf("committing %d one-row transactions while the replicator is stopped", n)
	began := time.Now()
	lastLSN, err := commitStaged(ctx, conn, n)
	if err != nil {
		return nil, err
	}
	res.Inserting = time.Since(began)
	var endpos string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&endpos); err != nil {
		return nil, fmt.Errorf("read WAL end: %w", err)
	}
	lastID, err := lastOutboxID(ctx, conn)
	if err != nil {
		return nil, err
	}

	if err := b.recvlogical(ctx, endpos); err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", twinSlot); err != nil {
		return nil, fmt.Errorf("drop twin slot: %w", err)
	}

	b.logf("replicator: drain")
	if err := checkpoint(ctx, conn); err != nil {
		return nil, err
	}
	p, err := startReplicator(b.bin, b.cluster.URL(replicatorDB), filepath.Join(b.work, "drain-and-live.log"))
	if err != nil {
		return nil, err
	}
	seen, err := waitAccounted(ctx, conn, p, lastID, timeout(n))
	if err != nil {
		p.kill()
		return nil, err
	}
	res.Replicator = seen.Sub(p.started)
	err = poll(ctx, "the checkpoint to pass the last queued transaction", 10*time.Millisecond, timeout(n), p, func() (bool, error) {
		var ok bool
		err := conn.QueryRow(ctx, "SELECT lsn > $1::pg_lsn FROM neon_auth.replicator_checkpoint WHERE slot_name = $2",
			lastLSN, slotName).Scan(&ok)
		return ok, err
	})
	if err != nil {
		p.kill()
		return nil, err
	}
	res.Streamed = time.Since(p.started)
	b.logf("replicator: %d events accounted for in %s (%.0f ev/s), slot drained in %s",
		n, res.Replicator.Round(time.Millisecond), rate(n, res.Replicator), res.Streamed.Round(time.Millisecond))
	if _, err := conn.Exec(ctx, "DROP TABLE bench_staging"); err != nil {
		p.kill()
		return nil, fmt.Errorf("drop staging table: %w", err)
	}
	return p, nil
}

// stageEvents puts the drain's events in an unlogged table, which writes
// no WAL, so that the slots see nothing of it but the inserts that follow.
func stageEvents(ctx context.Context, conn *pgx.Conn, gen *generator, n int) error {
	if _, err := conn.Exec(ctx, `CREATE UNLOGGED TABLE bench_staging
		(seq int PRIMARY KEY, event_type text, payload jsonb, event_id text, occurred_at timestamptz)`); err != nil {
		return fmt.Errorf("create staging table: %w", err)
	}
	seq := 0
	_, err := conn.CopyFrom(ctx, pgx.Identifier{"bench_staging"},
		[]string{"seq", "event_type", "payload", "event_id", "occurred_at"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if seq == n {
				return nil, nil
			}
			seq++
			ev := gen.next()
			return []any{seq, ev.EventType, json.RawMessage(ev.Payload), ev.EventID, ev.OccurredAt}, nil
		}))
	if err != nil {
		return fmt.Errorf("stage events: %w", err)
	}
	return nil
}

// commitStaged inserts the staged events into the outbox, one transaction
// each, from a server-side loop (far faster than a client's round trips).
// The last one commits apart, to learn a WAL position between its insert
// and its commit: the checkpoint passes it once that transaction is folded.
func commitStaged(ctx context.Context, conn *pgx.Conn, n int) (string, error) {
	const insert = `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at)
		SELECT 'clerk', event_type, payload, event_id, occurred_at FROM bench_staging WHERE seq = `
	loop := `DO $$
		DECLARE i int;
		BEGIN
			FOR i IN 1..` + strconv.Itoa(n-1) + ` LOOP
				` + insert + `i;
				COMMIT;
			END LOOP;
		END $$`
	if _, err := conn.Exec(ctx, loop); err != nil {
		return "", fmt.Errorf("commit one-row transactions: %w", err)
	}
	var lsn string
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, insert+strconv.Itoa(n)); err != nil {
			return err
		}
		return tx.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn)
	})
	if err != nil {
		return "", fmt.Errorf("commit the last transaction: %w", err)
	}
	return lsn, nil
}

// recvlogical times pg_recvlogical decoding the twin slot up to endpos with
// the replicator's plugin options, writing to /dev/null.
func (b *bench) recvlogical(ctx context.Context, endpos string) error {
	res := &b.res.Drain
	bin := findRecvlogical(ctx)
	if bin == "" {
		res.RecvlogicalMissing = "pg_recvlogical not found (neither in pg_config --bindir nor on PATH)"
		b.logf("reference: %s; the drain ratio is n/a", res.RecvlogicalMissing)
		return nil
	}
	b.logf("reference: %s from the twin slot", bin)
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s", b.cluster.Port(), replicatorDB)
	cmd := exec.CommandContext(ctx, bin, "-d", conninfo, "--slot", twinSlot, "--start", "--endpos", endpos, "--no-loop",
		"-f", "/dev/null", "--option", "proto_version=1", "--option", "publication_names=users_sync_outbox")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+b.cluster.Password())
	began := time.Now()
	out, err := cmd.CombinedOutput()
	res.Recvlogical = time.Since(began)
	if err != nil {
		return fmt.Errorf("pg_recvlogical: %w\n%s", err, out)
	}
	b.logf("reference: %d events in %s (%.0f ev/s)", res.Events, res.Recvlogical.Round(time.Millisecond), rate(res.Events, res.Recvlogical))
	return nil
}

// findRecvlogical returns pg_recvlogical from pg_config's bindir, else
// from PATH, else "".
func findRecvlogical(ctx context.Context) string {
	if out, err := exec.CommandContext(ctx, "pg_config", "--bindir").Output(); err == nil {
		path := filepath.Join(strings.TrimSpace(string(out)), "pg_recvlogical")
		if fi, err := os.Stat(path); err == nil && fi.Mode()&0o111 != 0 {
			return path
		}
	}
	if path, err := exec.LookPath("pg_recvlogical"); err == nil {
		return path
	}
	return ""
}
