// Package outbox is usersync's event model: the rows of neon_auth.outbox, the
// provider adapters that turn them into validated events (clerk, stack,
// workos, generic), the fold that turns a user's events into its users_sync
// row, and a small client for applications (Insert inside the caller's
// transaction, WaitFolded for read-your-writes).
//
// Decoding and folding (Decode, Fold) are pure: no connections, no
// goroutines, no clock. The replicator feeds them rows read from the table or
// the WAL; tests feed them anything at all. Only the client (client.go) talks
// to the database. The webhook receiver lives in outbox/webhook.
package outbox
