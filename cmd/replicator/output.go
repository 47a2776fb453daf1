package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/urfave/cli/v2"
)

// openDatabase connects to --database-url for a one-shot command.
func openDatabase(c *cli.Context) (*pgx.Conn, error) {
	url, err := databaseURL(c)
	if err != nil {
		return nil, err
	}
	return connect(c, url)
}

// jsonLines writes one JSON object per line, with <, > and & left readable.
func jsonLines(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// newTable returns a writer that aligns tab-separated columns.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes one table row of cells.
func row(tw io.Writer, cells ...string) {
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// orDash shows a nullable value in a table cell.
func orDash[T any](v *T) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprint(*v)
}

// shortTime shows a time in a table: UTC, RFC 3339, no trailing zeros.
func shortTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func shortTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return shortTime(*t)
}

// cellValue shows a JSON value in a table: strings bare (times shortened),
// null as ∅, anything else as JSON cut to a readable length.
func cellValue(v json.RawMessage) string {
	if len(v) == 0 || string(v) == "null" {
		return "∅"
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return shortTime(t)
		}
		return s
	}
	const limit = 60
	if text := string(v); len(text) > limit {
		return text[:limit] + "…"
	}
	return string(v)
}
