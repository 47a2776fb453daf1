package main

import (
	"context"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestReorderArgs(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	tests := []struct{ in, want string }{
		{"replicator import clerk --dry-run", "replicator import --dry-run clerk"},
		{"replicator import clerk --api-url http://x --prune-missing", "replicator import --api-url http://x --prune-missing clerk"},
		{"replicator import --dry-run clerk", "replicator import --dry-run clerk"},
		{"replicator --log-level debug import clerk --page-size=5", "replicator --log-level debug import --page-size=5 clerk"},
		{"replicator import clerk --log-format json -dry-run", "replicator --log-format json import -dry-run clerk"},
		{"replicator run now --slot s1", "replicator run --slot s1 now"},
		{"replicator import -- --not-a-flag", "replicator import -- --not-a-flag"},
		{"replicator import clerk -- --dry-run", "replicator import clerk -- --dry-run"},
		{"replicator import clerk --bogus", "replicator import --bogus clerk"},
		{"replicator import clerk -", "replicator import clerk -"},
		{"replicator import clerk --help", "replicator import --help"},
		{"replicator --log-format json import clerk -h --dry-run", "replicator --log-format json import -h"},
		{"replicator --version", "replicator --version"},
		{"replicator nosuch a --b", "replicator nosuch a --b"},
		{"replicator", "replicator"},
	}
	for _, tt := range tests {
		if got := strings.Join(reorderArgs(app, strings.Fields(tt.in)), " "); got != tt.want {
			t.Errorf("reorderArgs(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestReorderArgs_ParsesFlagsAfterArguments runs a command shaped like
// 'history USER_ID [--json] [--limit N]' through urfave/cli: without the
// reordering, the flags after the user id would be read as arguments.
func TestReorderArgs_ParsesFlagsAfterArguments(t *testing.T) {
	var gotArgs []string
	var gotJSON bool
	var gotLimit int
	app := &cli.App{
		Name:  "replicator",
		Flags: []cli.Flag{&cli.StringFlag{Name: "log-level"}},
		Commands: []*cli.Command{{
			Name:  "history",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "json"}, &cli.IntFlag{Name: "limit", Aliases: []string{"n"}}},
			Action: func(c *cli.Context) error {
				gotArgs, gotJSON, gotLimit = c.Args().Slice(), c.Bool("json"), c.Int("limit")
				return nil
			},
		}},
	}
	for _, line := range []string{
		"replicator history user_1 --json -n 5",
		"replicator history --json user_1 --limit=5",
		"replicator history user_1 --limit 5 --json",
	} {
		gotArgs, gotJSON, gotLimit = nil, false, 0
		if err := app.RunContext(context.Background(), reorderArgs(app, strings.Fields(line))); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if !reflect.DeepEqual(gotArgs, []string{"user_1"}) || !gotJSON || gotLimit != 5 {
			t.Errorf("%s: args %q, json %v, limit %d; want [user_1], true, 5", line, gotArgs, gotJSON, gotLimit)
		}
	}
}
