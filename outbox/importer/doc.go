// Package importer brings a provider's existing users into neon_auth.outbox:
// it pages the provider's list-users API (Clerk, Stack Auth, WorkOS) and
// inserts one user.updated row per user with an idempotent event id, so the
// replicator folds them like any other event and a re-run inserts nothing
// new. With PruneMissing it also emits user.deleted rows for the users that
// users_sync holds as live but the provider no longer has.
//
// The pure parts (rows.go: event ids, versions, times) are separate from the
// I/O: one HTTP client per provider (clerk.go, stack.go, workos.go) behind a
// retrying transport (api.go), and the outbox writer (store.go), which uses
// the one connection Run is given.
//
// The API shapes follow the providers' own documentation and SDKs:
//   - Clerk: Backend API reference "List all users" (GET /v1/users, limit
//     1-500, offset, order_by "+created_at"; the body is a JSON array) and
//     "Retrieve a user" (GET /v1/users/{user_id}); clerk/javascript
//     packages/backend UserApi.getUserList; rate limits and Retry-After from
//     https://clerk.com/docs/reference/rate-limits.
//   - Stack Auth: stack-auth/stack-auth apps/backend/src/app/api/latest/users/crud.tsx
//     (query limit, cursor, order_by, desc, include_anonymous; the answer
//     {items, is_paginated, pagination: {next_cursor}}), the server headers
//     x-stack-access-type, x-stack-project-id, x-stack-secret-server-key of
//     https://docs.stack-auth.com/rest-api/overview, and known-errors.tsx.
//   - WorkOS: https://workos.com/docs/reference/authkit/user (list users,
//     GET /user_management/users), https://workos.com/docs/reference/pagination
//     (limit up to 100, order, after; list_metadata.after), workos-go
//     pkg/usermanagement ListUsers, and https://workos.com/docs/reference/rate-limits.
package importer
