// Package migrations embeds the SQL files that create usersync's schema.
//
// Files are named NNNN_description.sql and applied in order, each in its own
// transaction together with its row in neon_auth.schema_migrations.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
