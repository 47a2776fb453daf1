package importer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The outbox writer. Every statement runs on the one connection Run is
// given: the ids a listing returned are kept in a temporary table of that
// session (seenTable) rather than in memory, so pruning needs no memory per
// user; a dropped connection ends the run, and a re-run lists again.

const seenTable = "pg_temp.usersync_import_seen"

// checkSchema explains a database that 'replicator migrate' has not set up.
func checkSchema(ctx context.Context, conn *pgx.Conn) error {
	var present bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('neon_auth.outbox') IS NOT NULL
		AND to_regclass('neon_auth.users_sync_history') IS NOT NULL`).Scan(&present); err != nil {
		return fmt.Errorf("check the schema: %w", err)
	}
	if !present {
		return fmt.Errorf("neon_auth.outbox does not exist in this database: run 'replicator migrate' first")
	}
	return nil
}

// createSeenTable makes an empty table of this session for the listed ids.
func createSeenTable(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, `CREATE TEMPORARY TABLE IF NOT EXISTS usersync_import_seen (user_id text PRIMARY KEY);
		TRUNCATE `+seenTable)
	if err != nil {
		return fmt.Errorf("create the temporary table of listed users: %w", err)
	}
	return nil
}

// The parameters are text arrays cast in SQL, so the statements also run
// under the simple protocol (PgBouncer in transaction mode).
const (
	insertImportSQL = `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at)
SELECT $1, 'user.updated', t.payload::jsonb, t.event_id, t.occurred_at
FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS t(payload, event_id, occurred_at)
ON CONFLICT (provider, event_id) DO NOTHING`

	countNewSQL = `SELECT count(*) FROM (SELECT DISTINCT e FROM unnest($2::text[]) AS e) AS t
WHERE NOT EXISTS (SELECT 1 FROM neon_auth.outbox o WHERE o.provider = $1 AND o.event_id = t.e)`

	insertSeenSQL = `INSERT INTO ` + seenTable + ` (user_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`

	// candidatesSQL pages, by id, through the live users_sync users of a
	// provider (any of their history rows names it) that the listing lacked.
	candidatesSQL = `SELECT u.id FROM neon_auth.users_sync u
WHERE u.deleted_at IS NULL AND u.id > $2
  AND NOT EXISTS (SELECT 1 FROM ` + seenTable + ` s WHERE s.user_id = u.id)
  AND EXISTS (SELECT 1 FROM neon_auth.users_sync_history h WHERE h.user_id = u.id AND h.provider = $1)
ORDER BY u.id
LIMIT $3`

	insertDeletesSQL = `INSERT INTO neon_auth.outbox (provider, event_type, payload, event_id, occurred_at)
SELECT $1, 'user.deleted', jsonb_build_object('id', t.id, 'deleted', true), t.event_id, $4::timestamptz
FROM unnest($2::text[], $3::text[]) AS t(id, event_id)
ON CONFLICT (provider, event_id) DO NOTHING`
)

// pageResult is what writing a page did.
type pageResult struct {
	// inserted counts the new rows (would be new, in a dry run).
	inserted int64
	// refused lists the rows Postgres would not store.
	refused []refusedRow
}

// refusedRow is a user object Postgres refused, and why.
type refusedRow struct{ userID, reason string }

// writeImports commits one page: its rows (only counted when dryRun) and,
// when recordSeen, the ids of all its users in seenTable.
func writeImports(ctx context.Context, conn *pgx.Conn, provider string, rows []importRow, recordSeen, dryRun bool) (pageResult, error) {
	var res pageResult
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		if dryRun {
			res, err = countNew(ctx, tx, provider, rows)
		} else {
			res, err = insertRows(ctx, tx, provider, rows)
		}
		if err != nil || !recordSeen {
			return err
		}
		userIDs := make([]string, len(rows))
		for i, r := range rows {
			userIDs[i] = r.userID
		}
		if _, err := tx.Exec(ctx, insertSeenSQL, userIDs); err != nil {
			return fmt.Errorf("record the listed users: %w", err)
		}
		return nil
	})
	return res, err
}

func countNew(ctx context.Context, tx pgx.Tx, provider string, rows []importRow) (pageResult, error) {
	eventIDs := make([]string, len(rows))
	for i, r := range rows {
		eventIDs[i] = r.eventID
	}
	var res pageResult
	if err := tx.QueryRow(ctx, countNewSQL, provider, eventIDs).Scan(&res.inserted); err != nil {
		return res, fmt.Errorf("count the new rows: %w", err)
	}
	return res, nil
}

// insertRows inserts the rows in one statement. When Postgres refuses some
// data (a string jsonb cannot hold, such as an unpaired surrogate escape; a
// document nested too deep), it inserts them one at a time instead, so one
// odd user cannot block the import, and reports those it refused.
func insertRows(ctx context.Context, tx pgx.Tx, provider string, rows []importRow) (pageResult, error) {
	n, err := insertUnderSavepoint(ctx, tx, provider, rows)
	if err == nil || !refusedData(err) {
		return pageResult{inserted: n}, err
	}
	var res pageResult
	for _, r := range rows {
		n, err := insertUnderSavepoint(ctx, tx, provider, []importRow{r})
		var pgErr *pgconn.PgError
		switch {
		case refusedData(err) && errors.As(err, &pgErr):
			res.refused = append(res.refused, refusedRow{userID: r.userID, reason: pgErr.Message + ": " + pgErr.Detail})
		case err != nil:
			return res, err
		default:
			res.inserted += n
		}
	}
	return res, nil
}

func insertUnderSavepoint(ctx context.Context, tx pgx.Tx, provider string, rows []importRow) (int64, error) {
	payloads, eventIDs := make([]string, len(rows)), make([]string, len(rows))
	occurred := make([]time.Time, len(rows))
	for i, r := range rows {
		payloads[i], eventIDs[i], occurred[i] = string(r.payload), r.eventID, r.occurredAt
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("savepoint: %w", err)
	}
	tag, err := sp.Exec(ctx, insertImportSQL, provider, payloads, eventIDs, occurred)
	if err != nil {
		_ = sp.Rollback(ctx)
		return 0, fmt.Errorf("insert into neon_auth.outbox: %w", err)
	}
	return tag.RowsAffected(), sp.Commit(ctx)
}

// refusedData reports whether Postgres refused the values themselves (data
// exception, or a program limit such as the nesting depth), which inserting
// them again cannot cure.
func refusedData(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "54"))
}

// pruneCandidates returns up to limit ids, after the id after, of live
// users of the provider that the listing did not return.
func pruneCandidates(ctx context.Context, conn *pgx.Conn, provider, after string, limit int) ([]string, error) {
	rows, err := conn.Query(ctx, candidatesSQL, provider, after, limit)
	if err != nil {
		return nil, fmt.Errorf("find users the listing lacked: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("find users the listing lacked: %w", err)
	}
	return ids, nil
}

// writeDeletes commits a user.deleted row, at the listing's start, for each
// user gone from the provider; it returns how many were new (would be new,
// in a dry run).
func writeDeletes(ctx context.Context, conn *pgx.Conn, provider string, userIDs []string, listingStart time.Time, dryRun bool) (int64, error) {
	eventIDs := make([]string, len(userIDs))
	for i, id := range userIDs {
		eventIDs[i] = reconcileEventID(listingStart, id)
	}
	if dryRun {
		var n int64
		if err := conn.QueryRow(ctx, countNewSQL, provider, eventIDs).Scan(&n); err != nil {
			return 0, fmt.Errorf("count the new deletions: %w", err)
		}
		return n, nil
	}
	tag, err := conn.Exec(ctx, insertDeletesSQL, provider, userIDs, eventIDs, listingStart)
	if err != nil {
		return 0, fmt.Errorf("insert deletions into neon_auth.outbox: %w", err)
	}
	return tag.RowsAffected(), nil
}
