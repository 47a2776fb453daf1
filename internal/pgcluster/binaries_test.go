package pgcluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeVersions makes root/<version>/bin for each version, with the server
// binaries when complete is true.
func fakeVersions(t *testing.T, root string, versions map[string]bool) {
	t.Helper()
	for version, complete := range versions {
		bin := filepath.Join(root, version, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		names := serverBinaries[:1]
		if complete {
			names = serverBinaries
		}
		for _, name := range names {
			if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestFindBinDir(t *testing.T) {
	for _, tc := range []struct {
		name     string
		versions map[string]bool
		want     string // version directory; "" for ErrNoBinaries
	}{
		{"newest by number", map[string]bool{"9.6": true, "10": true, "15": true}, "15"},
		{"skips incomplete", map[string]bool{"14": true, "16": false}, "14"},
		{"none complete", map[string]bool{"16": false}, ""},
		{"nothing", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir()) // no pg_config, no initdb
			root := t.TempDir()
			fakeVersions(t, root, tc.versions)
			got, err := findBinDir(context.Background(), filepath.Join(root, "*", "bin"))
			if tc.want == "" {
				if !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "apt-get install -y postgresql") {
					t.Fatalf("findBinDir = %q, %v; want ErrNoBinaries saying what to install", got, err)
				}
				return
			}
			if want := filepath.Join(root, tc.want, "bin"); got != want || err != nil {
				t.Errorf("findBinDir = %q, %v; want %q", got, err, want)
			}
		})
	}
}

func TestFindBinDir_PathSymlink(t *testing.T) {
	root := t.TempDir()
	fakeVersions(t, root, map[string]bool{"15": true})
	onPath := t.TempDir()
	if err := os.Symlink(filepath.Join(root, "15", "bin", "initdb"), filepath.Join(onPath, "initdb")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", onPath)
	got, err := findBinDir(context.Background(), filepath.Join(t.TempDir(), "*", "bin"))
	if want := filepath.Join(root, "15", "bin"); got != want || err != nil {
		t.Errorf("findBinDir = %q, %v; want the symlink's target directory %q", got, err, want)
	}
}

func TestConfigFile(t *testing.T) {
	t.Parallel()
	got := string(configFile(5555, "/tmp/x", map[string]string{"b": "it's", "a": "1"}))
	for _, want := range []string{
		"wal_level = 'logical'\n",
		"port = '5555'\n",
		"unix_socket_directories = '/tmp/x'\n",
		"a = '1'\nb = 'it''s'\n", // sorted, quotes doubled, after the defaults
	} {
		if !strings.Contains(got, want) {
			t.Errorf("config file lacks %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "a = ") < strings.Index(got, "fsync") {
		t.Errorf("extra settings come before the defaults they must override:\n%s", got)
	}
}

func TestChooseBinDir(t *testing.T) {
	root := t.TempDir()
	fakeVersions(t, root, map[string]bool{"14": true, "16": false})
	complete, incomplete := filepath.Join(root, "14", "bin"), filepath.Join(root, "16", "bin")
	for _, tc := range []struct {
		name, explicit, env string
		want                string // "" for an error naming the source
		wantSource          string
	}{
		{name: "PG_BINDIR", env: complete, want: complete},
		{name: "explicit wins over PG_BINDIR", explicit: complete, env: incomplete, want: complete},
		{name: "PG_BINDIR without binaries", env: incomplete, wantSource: "PG_BINDIR=" + incomplete},
		{name: "PG_BINDIR missing", env: filepath.Join(root, "nope"), wantSource: "PG_BINDIR="},
		{name: "explicit without binaries", explicit: incomplete, wantSource: "Options.BinDir=" + incomplete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(BinDirEnv, tc.env)
			got, err := chooseBinDir(context.Background(), tc.explicit)
			if tc.want != "" {
				if got != tc.want || err != nil {
					t.Errorf("chooseBinDir = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			// An asked-for directory that does not work is an error, not a
			// skip (ErrNoBinaries) nor a fall-back to another server.
			if err == nil || errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), tc.wantSource) ||
				!strings.Contains(err.Error(), "scripts/install-postgres.sh") {
				t.Errorf("chooseBinDir = %q, %v; want an error naming %s and saying what to do", got, err, tc.wantSource)
			}
		})
	}
}
