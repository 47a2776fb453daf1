// Package pgtest gives tests a real PostgreSQL server: one throwaway cluster
// per test package, started by Main from TestMain, and one fresh database per
// test from NewDatabase. Tests that stop, crash or reconfigure the server
// take a dedicated cluster from NewCluster instead.
//
// TEST_DATABASE_URL may point at an existing server instead of a local
// cluster; its database must allow CREATE DATABASE, and the server needs
// wal_level=logical for replication tests.
//
// Without server binaries (and without TEST_DATABASE_URL) tests that need
// PostgreSQL skip, saying why, except under CI=true, where they fail: a CI
// run must never pass by skipping them.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
package pgtest
