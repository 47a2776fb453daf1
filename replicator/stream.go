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

// itemKind tells what a streamItem carries.
type itemKind uint8

const (
	itemKeepalive itemKind = iota
	itemBegin
	itemChange
	itemCommit
	itemTruncate
)

// streamItem is one replication message, decoded by the reader and handed
// to the applier.
type streamItem struct {
	kind           itemKind
	change         change        // itemChange
	endLSN         pglogrepl.LSN // itemCommit: the end of the source transaction
	serverWALEnd   pglogrepl.LSN
	replyRequested bool
	weight         int64 // bytes held against the in-flight budget
}

// applyTimeout bounds one apply transaction; past it the session restarts.
const applyTimeout = 2 * time.Minute

// inFlightBytes bounds the data decoded but not yet taken by the applier,
// so memory does not grow with the size of the events queued.
const inFlightBytes = 4 << 20

// handOffSlots is the hand-off channel's length; the byte budget, not the
// count, is what bounds it, so that a backlog reaches the applier in full
// batches.
const handOffSlots = 8192

// streamer runs one replication session: a reader goroutine that owns the
// socket's read side, answers the server at once and decodes, and the
// applier loop that batches and folds.
type streamer struct {
	cfg       Config
	logger    *slog.Logger
	repl      *pgconn.PgConn
	app       *applier
	interval  time.Duration
	confirmed atomic.Uint64 // the position reported as written, flushed and applied
	sendMu    sync.Mutex
	total     applyStats
	budget    *semaphore.Weighted
	// readerDone ends, with the reader's error as its cause, when the
	// reader stops on an error: the session is over, and an apply still
	// waiting for its answer is abandoned.
	readerDone context.Context

	// Owned by the reader.
	typeMap   *pgtype.Map
	relations map[uint32]*relation
	txLSN     uint64
	txTime    time.Time

	// Owned by the applier.
	queue batchQueue
	// publication is the publication identity the session started with
	// (publicationIdentity); the applier checks it while idle.
	publication string
}

// run streams until ctx ends or the connection fails. before runs on the
// apply side first (the catch-up) while the reader already keeps the server
// answered, so that a long catch-up holds the slot without timing out.
func (s *streamer) run(ctx context.Context, before func(context.Context) error) error {
	items := make(chan streamItem, handOffSlots)
	s.budget = semaphore.NewWeighted(inFlightBytes)
	s.queue = batchQueue{maxCount: s.cfg.BatchSize, maxBytes: s.cfg.BatchBytes}
	g, gctx := errgroup.WithContext(ctx)
	readerDone, readerFailed := context.WithCancelCause(context.Background())
	defer readerFailed(nil)
	s.readerDone = readerDone
	g.Go(func() error {
		defer close(items)
		err := s.read(gctx, items)
		if err != nil {
			readerFailed(err)
		}
		return err
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
// for a reply at once, and decodes and hands everything else on. A server
// silent for several intervals despite our reply requests means a dead
// connection.
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
	select {
	case items <- it:
		return nil
	case <-ctx.Done():
		return nil
	default:
	}
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
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

// decode turns one message from the server into an item for the applier;
// ok is false for messages the applier need not see.
func (s *streamer) decode(raw pgproto3.BackendMessage) (it streamItem, ok bool, err error) {
	switch m := raw.(type) {
	case *pgproto3.CopyData:
		if len(m.Data) == 0 {
			return it, false, nil
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return it, false, fmt.Errorf("parse keepalive: %w", err)
			}
			return streamItem{kind: itemKeepalive, serverWALEnd: ka.ServerWALEnd, replyRequested: ka.ReplyRequested}, true, nil
		case pglogrepl.XLogDataByteID:
			// The receive buffer is reused by the next receive: copy first.
			data := append([]byte(nil), m.Data[1:]...)
			xld, err := pglogrepl.ParseXLogData(data)
			if err != nil {
				return it, false, fmt.Errorf("parse xlogdata: %w", err)
			}
			msg, err := parsePgoutput(xld.WALData)
			if err != nil {
				return it, false, err
			}
			it, ok, err = s.decodeLogical(msg)
			it.serverWALEnd = xld.ServerWALEnd
			return it, ok, err
		}
		return it, false, nil
	case *pgproto3.ErrorResponse:
		return it, false, fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
	case *pgproto3.CopyDone:
		return it, false, errors.New("replication stream: the server ended the stream")
	}
	return it, false, nil
}

// decodeLogical decodes one pgoutput message; an outbox insert is decoded
// all the way to an event (or a reject) here, off the applier's path.
func (s *streamer) decodeLogical(msg pglogrepl.Message) (streamItem, bool, error) {
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		rel, err := newRelation(m)
		if err != nil {
			return streamItem{}, false, err
		}
		s.relations[m.RelationID] = rel
		return streamItem{}, false, nil
	case *pglogrepl.BeginMessage:
		s.txLSN, s.txTime = uint64(m.FinalLSN), m.CommitTime
		return streamItem{kind: itemBegin}, true, nil
	case *pglogrepl.InsertMessage:
		rel, ok := s.relations[m.RelationID]
		if !ok {
			return streamItem{}, false, fmt.Errorf("insert for relation %d before its relation message", m.RelationID)
		}
		if !rel.isOutbox {
			return streamItem{}, false, nil
		}
		row, err := rel.textRow(m.Tuple)
		if err != nil {
			return streamItem{}, false, err
		}
		rec, err := parseRecord(&row, s.typeMap)
		if err != nil {
			return streamItem{}, false, err
		}
		c := decodeChange(sourceRecord{Record: rec, LSN: s.txLSN, CommittedAt: s.txTime})
		return streamItem{kind: itemChange, change: c, weight: min(int64(c.size()), inFlightBytes)}, true, nil
	case *pglogrepl.CommitMessage:
		return streamItem{kind: itemCommit, endLSN: m.TransactionEndLSN}, true, nil
	case *pglogrepl.TruncateMessage:
		return streamItem{kind: itemTruncate}, true, nil
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
