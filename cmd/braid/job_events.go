package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/node"
)

// jobEventsCommand is `braid job events ID`: the failover timeline of a
// job, every epoch change as each current member saw it.
func jobEventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "a job's epoch changes, phase by phase, as each member saw them (where failover time goes)",
		Description: "For every change of the job's epoch (a member lost or joined), when each current member saw:\n" +
			"the lost member suspected and declared failed by gossip, the new epoch committed, the step\n" +
			"agreed (and how it caught up), the new ring connected, and its first step done; in seconds\n" +
			"after the first of these.",
		ArgsUsage: "ID",
		Flags:     append(apiFlags(), &cli.BoolFlag{Name: "json", Usage: "one JSON object per change and member"}),
		Action: func(c *cli.Context) error {
			_, _, js, err := jobStatusArg(c)
			if err != nil {
				return err
			}
			type seen struct {
				Node string `json:"node"`
				node.EpochChange
			}
			var all []seen
			for _, w := range js.Workers {
				for _, ch := range w.EpochChanges {
					all = append(all, seen{w.Node, ch})
				}
			}
			slices.SortStableFunc(all, func(a, b seen) int {
				if a.Epoch != b.Epoch {
					return int(a.Epoch) - int(b.Epoch)
				}
				return strings.Compare(a.Node, b.Node)
			})
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				for _, s := range all {
					if err := enc.Encode(s); err != nil {
						return err
					}
				}
				return nil
			}
			w := c.App.Writer
			if len(all) == 0 {
				fmt.Fprintf(w, "job %s: no epoch change since its members started it\n", js.ID)
				return nil
			}
			sec := func(ms *float64) string {
				if ms == nil {
					return "     -"
				}
				return fmt.Sprintf("%6.2f", *ms/1e3)
			}
			fmt.Fprintln(w, "# seconds after the first sign of the change, as each member saw it")
			fmt.Fprintf(w, "%-12s %-10s %-12s %6s %6s %6s %6s %-9s %6s %6s\n",
				"epoch", "member", "lost/joined", "susp", "decl", "commit", "sync", "(how)", "ring", "step")
			for _, s := range all {
				ep := fmt.Sprintf("%d→%d", s.From, s.Epoch)
				if len(s.Via) > 0 {
					ep += fmt.Sprintf(" (via %d)", len(s.Via))
				}
				who := "-" + strings.Join(s.Lost, ",-")
				if len(s.Lost) == 0 {
					who = ""
				}
				if len(s.Joined) > 0 {
					who = strings.TrimPrefix(who+" +"+strings.Join(s.Joined, ",+"), " ")
				}
				fmt.Fprintf(w, "%-12s %-10s %-12s %s %s %6.2f %6.2f %-9s %6.2f %6.2f\n", ep, s.Node, who,
					sec(s.Suspected), sec(s.Declared), s.Committed/1e3, s.Resynced/1e3, s.Resync, s.Connected/1e3, s.FirstStep/1e3)
			}
			return nil
		},
	}
}
