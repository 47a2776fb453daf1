// Package importertest provides fakes of the list-users APIs that the
// importer reads (Clerk, Stack Auth, WorkOS), written from the providers'
// documentation, for tests: httptest servers with their authentication,
// pagination and error answers, plus a hook to inject faults (a 429, a 5xx,
// a hung or dropped connection).
package importertest
