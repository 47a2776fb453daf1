// Package webhook is usersync's webhook receiver: an http.Handler that
// verifies Svix / Standard Webhooks signatures (the scheme Clerk and Stack Auth
// sign with) and WorkOS-Signature headers, and stores each user lifecycle event
// in neon_auth.outbox, answering 2xx only once the row is committed.
//
// The answers are chosen so that the provider does the right thing: a 5xx
// (retry later) only when retrying can help, a 4xx when it cannot, and a 2xx
// only for an event that is durably stored or deliberately ignored.
package webhook
