package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/usersync/usersync/outbox"
	"github.com/usersync/usersync/replicator"
)

// AsOf calls fn with each users_sync row as it stood at t, by user id: the
// after image of the user's last history row applied at or before t. Users
// absent then (not yet created, removed by a resync, forgotten) are
// skipped. With userIDs, only those users are read. History that Prune
// deleted is not there to be read.
func AsOf(ctx context.Context, conn *pgx.Conn, t time.Time, userIDs []string, fn func(outbox.Row) error) error {
	if err := replicator.CheckSchema(ctx, conn); err != nil {
		return err
	}
	var ids []string
	if len(userIDs) > 0 {
		ids = userIDs
	}
	rows, err := conn.Query(ctx, `SELECT DISTINCT ON (user_id) user_id, after::text
		FROM neon_auth.users_sync_history
		WHERE applied_at <= $1 AND ($2::text[] IS NULL OR user_id = ANY($2::text[]))
		ORDER BY user_id, id DESC`, t, ids)
	if err != nil {
		return fmt.Errorf("read history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var after *string
		if err := rows.Scan(&id, &after); err != nil {
			return fmt.Errorf("read history: %w", err)
		}
		if after == nil {
			continue
		}
		var row outbox.Row
		if err := json.Unmarshal([]byte(*after), &row); err != nil {
			return fmt.Errorf("history of %s: after image: %w", id, err)
		}
		if err := fn(row); err != nil {
			return err
		}
	}
	return rows.Err()
}
