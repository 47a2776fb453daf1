// Package outbox is usersync's event model: the rows of neon_auth.outbox, the
// provider adapters that turn them into validated events (clerk, stack,
// generic), and the fold that turns a user's events into its users_sync row.
//
// Decoding and folding are pure: no connections, no goroutines, no clock. The
// replicator feeds them rows read from the table or the WAL; tests feed them
// anything at all.
package outbox
