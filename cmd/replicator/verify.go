package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/replicator/audit"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "prove users_sync against the fold of the outbox; exit 1 listing each difference",
		Description: "Recomputes the fold of every accounted-for outbox row and compares it with users_sync and\n" +
			"the registers, and checks that each outbox row is accounted for exactly once. Read-only;\n" +
			"safe while 'replicator run' streams. 'replicator resync --all' repairs what it finds.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "slot", Value: "users_sync", Usage: "logical replication slot whose position the accounting check uses"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON Lines: one object per difference, then a summary"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return newUsageError("verify takes no arguments, got %q", c.Args().First())
			}
			conn, err := openDatabase(c)
			if err != nil {
				return err
			}
			defer conn.Close(c.Context)
			out := newDifferencePrinter(c.App.Writer, c.Bool("json"))
			report, err := audit.Verify(c.Context, conn, audit.VerifyConfig{
				Slot: c.String("slot"), Progress: newProgress(c.App.ErrWriter), OnDifference: out.print,
			})
			if err != nil {
				return err
			}
			if err := out.summary(report); err != nil {
				return err
			}
			if report.Differences > 0 {
				return fmt.Errorf("verify found %d difference%s: run 'replicator resync --all' to repair users_sync", report.Differences, plural(report.Differences))
			}
			return nil
		},
	}
}

// differencePrinter prints verify's findings as text lines or JSON Lines.
type differencePrinter struct {
	w    io.Writer
	json bool
}

func newDifferencePrinter(w io.Writer, asJSON bool) *differencePrinter {
	return &differencePrinter{w: w, json: asJSON}
}

func (p *differencePrinter) print(d audit.Difference) error {
	if p.json {
		return jsonLines(p.w).Encode(d)
	}
	subject := "user " + d.UserID
	if d.UserID == "" {
		subject = fmt.Sprintf("outbox row %d", d.OutboxID)
	}
	_, err := fmt.Fprintf(p.w, "%s: %s: want %s, got %s\n", subject, d.Column, showValue(d.Want), showValue(d.Got))
	return err
}

func (p *differencePrinter) summary(r audit.VerifyReport) error {
	if p.json {
		return jsonLines(p.w).Encode(map[string]audit.VerifyReport{"summary": r})
	}
	var b strings.Builder
	if r.Differences == 0 {
		b.WriteString("verify: clean")
	} else {
		fmt.Fprintf(&b, "verify: %d difference%s (%d user%s)", r.Differences, plural(r.Differences), r.DifferingUsers, plural(r.DifferingUsers))
	}
	fmt.Fprintf(&b, "; %d outbox rows (%d folded, %d rejected), %d users compared", r.OutboxRows, r.Folded, r.Rejected, r.Users)
	if r.Pending > 0 {
		fmt.Fprintf(&b, "; %d rows not yet folded, not checked (no replicator folded them in time)", r.Pending)
	}
	_, err := fmt.Fprintln(p.w, b.String())
	return err
}

// showValue renders a difference's want/got for a person: JSON, cut short.
func showValue(v any) string {
	if s, ok := v.(string); ok && !strings.ContainsAny(s, `"\`) && strings.Contains(s, " ") {
		return s // a sentence ("a history row or a reject row")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	const limit = 120
	if len(b) > limit {
		return string(b[:limit]) + "…"
	}
	return string(b)
}

func plural(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
}
