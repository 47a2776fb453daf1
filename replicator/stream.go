package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// streamItem is one decoded replication message handed from the reader to
// the applier.
type streamItem struct {
	msg            pglogrepl.Message // nil for a keepalive
	serverWALEnd   pglogrepl.LSN
	replyRequested bool
	weight         int64 // bytes held against the in-flight budget
}

// applyTimeout bounds one apply transaction; past it the session restarts.
const applyTimeout = 2 * time.Minute

// inFlightBytes bounds the WAL data received but not yet taken by the
// applier, so memory does not grow with the size of the events queued.
const inFlightBytes = 8 << 20

// streamer runs one replication session: a reader goroutine that owns the
// socket's read side and answers the server at once, and the applier loop
// that batches and folds.
type streamer struct {
	cfg       Config
	logger    *slog.Logger
	repl      *pgconn.PgConn
	app       *applier
	interval  time.Duration
	confirmed atomic.Uint64 // the position reported as written, flushed and applied
	sendMu    sync.Mutex
	typeMap   *pgtype.Map
	relations map[uint32]*relation
	pend      pending
	total     applyStats
	budget    *semaphore.Weighted
}

// pending is the work received but not yet applied.
type pending struct {
	recs   []sourceRecord
	bytes  int
	endLSN uint64 // end of the last complete source transaction in recs
	inTx   bool
	txLSN  uint64
	txTime time.Time
}

func (p *pending) flushable(confirmed uint64) bool {
	return !p.inTx && (len(p.recs) > 0 || p.endLSN > confirmed)
}

// run streams until ctx ends or the connection fails. before runs on the
// apply side first (the catch-up) while the reader already keeps the server
// answered, so that a long catch-up holds the slot without timing out.
func (s *streamer) run(ctx context.Context, before func(context.Context) error) error {
	items := make(chan streamItem, 256)
	s.budget = semaphore.NewWeighted(inFlightBytes)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(items)
		return s.read(gctx, items)
	})
	g.Go(func() error {
		if err := before(gctx); err != nil {
			return err
		}
		return s.applyLoop(gctx, items)
	})
	err := g.Wait()
	// The reader has stopped: the socket is ours alone to report the final position.
	if !s.repl.IsClosed() {
		_ = s.sendStatus(false)
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// read receives from the server with a deadline on every receive, sends a
// status update on a timer well inside wal_sender_timeout (also while the
// applier is busy and the hand-off is full), answers a keepalive that asks
// for a reply at once, and hands everything else on. A server silent for
// several intervals despite our reply requests means a dead connection.
func (s *streamer) read(ctx context.Context, items chan<- streamItem) error {
	lastStatus, lastHeard := time.Now(), time.Now()
	for {
		if time.Since(lastStatus) >= s.interval {
			if err := s.sendStatus(true); err != nil {
				return err
			}
			lastStatus = time.Now()
		}
		rctx, cancel := context.WithDeadline(ctx, lastStatus.Add(s.interval))
		raw, err := s.repl.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !pgconn.Timeout(err) {
				return fmt.Errorf("receive replication message: %w", err)
			}
			if silent := time.Since(lastHeard); silent > 3*s.interval+5*time.Second {
				return fmt.Errorf("no message from the server for %s: the connection looks dead", silent.Round(time.Second))
			}
			continue
		}
		lastHeard = time.Now()
		it, ok, err := s.decode(raw)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if it.replyRequested {
			if err := s.sendStatus(false); err != nil {
				return err
			}
			lastStatus = time.Now()
		}
		if err := s.handOff(ctx, items, it); err != nil {
			return err
		}
		lastHeard = time.Now() // time spent blocked on the applier is not the server's silence
	}
}

// handOff passes it to the applier, waiting for room in the byte budget and
// the channel while still sending status updates on time.
func (s *streamer) handOff(ctx context.Context, items chan<- streamItem, it streamItem) error {
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		actx, cancel := context.WithTimeout(ctx, s.interval)
		err := s.budget.Acquire(actx, it.weight)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if err := s.sendStatus(false); err != nil {
			return err
		}
	}
	for {
		select {
		case items <- it:
			return nil
		case <-tick.C:
			if err := s.sendStatus(false); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *streamer) decode(raw pgproto3.BackendMessage) (streamItem, bool, error) {
	switch m := raw.(type) {
	case *pgproto3.CopyData:
		if len(m.Data) == 0 {
			return streamItem{}, false, nil
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return streamItem{}, false, fmt.Errorf("parse keepalive: %w", err)
			}
			return streamItem{serverWALEnd: ka.ServerWALEnd, replyRequested: ka.ReplyRequested}, true, nil
		case pglogrepl.XLogDataByteID:
			// The receive buffer is reused by the next receive: copy first.
			data := append([]byte(nil), m.Data[1:]...)
			xld, err := pglogrepl.ParseXLogData(data)
			if err != nil {
				return streamItem{}, false, fmt.Errorf("parse xlogdata: %w", err)
			}
			msg, err := parsePgoutput(xld.WALData)
			if err != nil {
				return streamItem{}, false, err
			}
			weight := min(int64(len(data)), inFlightBytes)
			return streamItem{msg: msg, serverWALEnd: xld.ServerWALEnd, weight: weight}, true, nil
		}
		return streamItem{}, false, nil
	case *pgproto3.ErrorResponse:
		return streamItem{}, false, fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
	case *pgproto3.CopyDone:
		return streamItem{}, false, errors.New("replication stream: the server ended the stream")
	}
	return streamItem{}, false, nil
}

// parsePgoutput decodes one pgoutput message. pglogrepl panics on truncated
// data; that becomes an error, and the session reconnects.
func parsePgoutput(data []byte) (msg pglogrepl.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("decode pgoutput message: %v (truncated or corrupt data)", r)
		}
	}()
	msg, err = pglogrepl.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("decode pgoutput message: %w", err)
	}
	return msg, nil
}

// sendStatus reports the committed position as written, flushed and
// applied, each set explicitly (left zero, pglogrepl would copy the write
// position into flush).
func (s *streamer) sendStatus(replyRequested bool) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	pos := pglogrepl.LSN(s.confirmed.Load())
	conn := s.repl.Conn()
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = conn.SetWriteDeadline(time.Time{}) }()
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos,
		WALFlushPosition: pos,
		WALApplyPosition: pos,
		ClientTime:       time.Now(),
		ReplyRequested:   replyRequested,
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	return nil
}

// applyLoop batches what the reader hands over and folds it: when the batch
// is full, or as soon as the stream has nothing more to give, so that a lone
// event is applied within milliseconds and a backlog in large batches.
func (s *streamer) applyLoop(ctx context.Context, items <-chan streamItem) error {
	for {
		var it streamItem
		var ok bool
		if s.pend.flushable(s.confirmed.Load()) {
			select {
			case it, ok = <-items:
			case <-ctx.Done():
				return s.finish(ctx)
			default:
				if err := s.flush(ctx); err != nil {
					if ctx.Err() != nil {
						return s.finish(ctx)
					}
					return err
				}
				continue
			}
		} else {
			select {
			case it, ok = <-items:
			case <-ctx.Done():
				return s.finish(ctx)
			}
		}
		if !ok {
			return s.finish(ctx)
		}
		s.budget.Release(it.weight)
		if err := s.handle(ctx, it); err != nil {
			if ctx.Err() != nil {
				return s.finish(ctx)
			}
			return err
		}
	}
}

func (s *streamer) handle(ctx context.Context, it streamItem) error {
	switch m := it.msg.(type) {
	case nil: // keepalive
		s.idleAdvance(it)
	case *pglogrepl.RelationMessage:
		rel, err := newRelation(m)
		if err != nil {
			return err
		}
		s.relations[m.RelationID] = rel
	case *pglogrepl.BeginMessage:
		s.pend.inTx, s.pend.txLSN, s.pend.txTime = true, uint64(m.FinalLSN), m.CommitTime
	case *pglogrepl.InsertMessage:
		return s.addInsert(ctx, m)
	case *pglogrepl.CommitMessage:
		s.pend.inTx = false
		s.pend.endLSN = uint64(m.TransactionEndLSN)
		if s.full() {
			return s.flush(ctx)
		}
	case *pglogrepl.TruncateMessage:
		s.logger.Warn("neon_auth.outbox was truncated; users_sync keeps what was folded")
	}
	return nil
}

// idleAdvance lets the confirmed position follow the server's WAL end while
// nothing is pending, so an idle outbox never pins WAL that the rest of the
// database (our own writes included) keeps producing.
func (s *streamer) idleAdvance(it streamItem) {
	if s.pend.inTx || len(s.pend.recs) > 0 || s.pend.endLSN > s.confirmed.Load() {
		return
	}
	if uint64(it.serverWALEnd) <= s.confirmed.Load() {
		return
	}
	s.confirmed.Store(uint64(it.serverWALEnd))
	if it.replyRequested {
		if err := s.sendStatus(false); err != nil {
			s.logger.Debug("status update after idle advance failed", "error", err)
		}
	}
}

func (s *streamer) addInsert(ctx context.Context, m *pglogrepl.InsertMessage) error {
	rel, ok := s.relations[m.RelationID]
	if !ok {
		return fmt.Errorf("insert for relation %d before its relation message", m.RelationID)
	}
	if !rel.isOutbox {
		return nil
	}
	row, err := rel.textRow(m.Tuple)
	if err != nil {
		return err
	}
	rec, err := parseRecord(&row, s.typeMap)
	if err != nil {
		return err
	}
	s.pend.recs = append(s.pend.recs, sourceRecord{Record: rec, LSN: s.pend.txLSN, CommittedAt: s.pend.txTime})
	s.pend.bytes += s.pend.recs[len(s.pend.recs)-1].size()
	if s.full() {
		return s.flush(ctx)
	}
	return nil
}

func (s *streamer) full() bool {
	return len(s.pend.recs) >= s.cfg.BatchSize || s.pend.bytes >= s.cfg.BatchBytes
}

// flush applies the pending records in one transaction. Mid-transaction (a
// full batch of a large source transaction) the checkpoint stays at the last
// complete transaction; the outbox-id guard makes the replay after a crash
// skip the part already applied.
func (s *streamer) flush(ctx context.Context) error {
	end := s.pend.endLSN
	if len(s.pend.recs) > 0 {
		// Shutdown stops the intake, not an apply under way: cancelling it
		// could leave its COMMIT in doubt. A deadline still bounds it.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), applyTimeout)
		began := time.Now()
		stats, err := s.app.apply(actx, s.pend.recs, end)
		cancel()
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		stats = reportBatch(s.cfg.Observer, stats, len(s.pend.recs), time.Since(began), false)
		s.total.add(stats)
		s.logger.Debug("applied batch", "events", len(s.pend.recs), "folded", stats.Folded,
			"rejected", stats.Rejected, "skipped", stats.Skipped, "checkpoint", pglogrepl.LSN(end).String())
	}
	clear(s.pend.recs)
	s.pend.recs, s.pend.bytes, s.pend.endLSN = s.pend.recs[:0], 0, 0
	if end > s.confirmed.Load() {
		s.confirmed.Store(end)
	}
	return nil
}

// finish commits the open batch; it runs on shutdown and when the reader stops.
func (s *streamer) finish(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if len(s.pend.recs) > 0 || s.pend.endLSN > 0 {
		if err := s.flush(fctx); err != nil {
			return err
		}
	}
	return nil
}
