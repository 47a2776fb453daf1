// Package audit holds the operator's tools over the replicator's tables:
// reading a user's trail (History, AsOf), proving users_sync against the pure
// fold of the outbox (Verify) and repairing it (Resync), erasing a person
// (Forget), and bounding the outbox (Prune, RunRetention).
//
// Everything here is safe while `replicator run` streams. The tools that
// write fold state (Resync, Forget) do so under the apply's fold lock through
// replicator.BeginExternalWrite; Prune writes no fold state and deletes only
// rows the fold and the slot can no longer need.
package audit
