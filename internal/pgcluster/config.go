package pgcluster

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// managedSettings are chosen by pgcluster; URL and the watchdog rely on them.
var managedSettings = []string{"listen_addresses", "port", "unix_socket_directories"}

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// validateSettings rejects settings that would corrupt postgresql.conf or
// move the server away from where the Cluster expects it.
func validateSettings(settings map[string]string) error {
	for name, value := range settings {
		switch {
		case !settingName.MatchString(name):
			return fmt.Errorf("settings: invalid name %q", name)
		case slices.Contains(managedSettings, strings.ToLower(name)):
			return fmt.Errorf("settings: %s is chosen by pgcluster and cannot be set", name)
		case strings.ContainsAny(value, "\n\r\x00"):
			return fmt.Errorf("settings: value of %s contains a line break or NUL", name)
		}
	}
	return nil
}

// baseSettings make a server fit for logical replication tests. fsync and
// full_page_writes are off for speed; synchronous_commit stays on so that a
// committed row survives StopImmediate, which tests use to simulate a crash.
var baseSettings = [][2]string{
	{"listen_addresses", "127.0.0.1"},
	{"wal_level", "logical"},
	{"max_wal_senders", "64"},
	{"max_replication_slots", "64"},
	{"max_connections", "300"},
	{"fsync", "off"},
	{"full_page_writes", "off"},
}

// confName is the file, included from postgresql.conf, holding the settings
// of pgcluster; ALTER SYSTEM still overrides it.
const confName = "pgcluster.conf"

func configFile(port int, socketDir string, extra map[string]string) []byte {
	var b strings.Builder
	b.WriteString("# Written by pgcluster.\n")
	line := func(name, value string) {
		fmt.Fprintf(&b, "%s = '%s'\n", name, strings.ReplaceAll(value, "'", "''"))
	}
	for _, kv := range baseSettings {
		line(kv[0], kv[1])
	}
	line("port", fmt.Sprint(port))
	line("unix_socket_directories", socketDir)
	for _, name := range slices.Sorted(maps.Keys(extra)) {
		line(name, extra[name])
	}
	return []byte(b.String())
}

// hbaFile allows local socket connections without a password and TCP
// connections, normal and replication, from loopback with the password.
const hbaFile = `# Written by pgcluster.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
`
