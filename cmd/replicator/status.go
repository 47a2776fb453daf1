package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/usersync/usersync/replicator"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the slot, confirmed and applied LSN, lag, pending events and rejects",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "slot", Value: "users_sync", Usage: "logical replication slot"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			url, err := databaseURL(c)
			if err != nil {
				return err
			}
			conn, err := connect(c, url)
			if err != nil {
				return err
			}
			defer conn.Close(c.Context)
			st, err := replicator.ReadStatus(c.Context, conn, c.String("slot"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(c.App.Writer, st)
			return nil
		},
	}
}

func printStatus(w io.Writer, st replicator.Status) {
	orNone := func(s *string) string {
		if s == nil {
			return "-"
		}
		return *s
	}
	state := "missing (created by 'replicator run')"
	if st.SlotExists {
		state = "inactive (no replicator connected)"
		if st.Active {
			state = "active"
		}
	}
	lag := fmt.Sprintf("%.1f s (oldest event not yet folded)", st.LagSeconds)
	if st.LagBytes != nil {
		lag = fmt.Sprintf("%d bytes of WAL, %s", *st.LagBytes, lag)
	}
	fmt.Fprintf(w, "slot:           %s (%s)\n", st.Slot, state)
	fmt.Fprintf(w, "confirmed lsn:  %s\n", orNone(st.ConfirmedLSN))
	fmt.Fprintf(w, "applied lsn:    %s\n", orNone(st.AppliedLSN))
	fmt.Fprintf(w, "lag:            %s\n", lag)
	fmt.Fprintf(w, "pending events: %d\n", st.PendingEvents)
	fmt.Fprintf(w, "rejects:        %d\n", st.Rejects)
}
