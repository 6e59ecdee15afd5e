package main

import (
	"encoding/csv"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

// jobHistoryCommand is `braid job history ID`: the job's loss curve and
// throughput, step by step, as a table, JSON or CSV.
func jobHistoryCommand() *cli.Command {
	return &cli.Command{
		Name:  "history",
		Usage: "a job's steps: loss, held-out loss, learning rate, tokens/s, bytes sent (a table, --json or --csv)",
		Description: "The history of the worker that ran the job furthest (rank 0's, which evaluates the held-out split):\n" +
			"the loss of a synchronous job is the global one; tokens/s and bytes sent are that worker's. The\n" +
			"held-out loss is empty where the step was not evaluated. A long job keeps its recent steps at full\n" +
			"resolution and the older ones thinned out (the JSON's \"thinned\" counts the points dropped).",
		ArgsUsage: "ID",
		Flags: append(apiFlags(), &cli.BoolFlag{Name: "json", Usage: "print the history as JSON"},
			&cli.BoolFlag{Name: "csv", Usage: "print one CSV row per step, with a header"}),
		Action: func(c *cli.Context) error {
			if c.Bool("json") && c.Bool("csv") {
				return fmt.Errorf("--json and --csv: choose one")
			}
			id, cl, err := jobClientArg(c)
			if err != nil {
				return err
			}
			h, err := cl.JobHistory(c.Context, id)
			if err != nil {
				return noJob(err, id)
			}
			w := c.App.Writer
			if c.Bool("json") {
				return printJSON(c, h)
			}
			g := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
			if c.Bool("csv") {
				cw := csv.NewWriter(w)
				cw.Write([]string{"step", "loss", "heldout_loss", "lr", "tokens_per_sec", "wire_bytes", "time"})
				for _, p := range h.Points {
					heldout := ""
					if p.HeldoutLoss != nil {
						heldout = g(*p.HeldoutLoss)
					}
					cw.Write([]string{strconv.Itoa(p.Step), g(p.Loss), heldout, g(p.LR), g(p.TokensPerSec),
						strconv.FormatInt(p.WireBytes, 10), p.Time.UTC().Format(time.RFC3339Nano)})
				}
				cw.Flush()
				return cw.Error()
			}
			if len(h.Points) == 0 {
				fmt.Fprintf(w, "job %s: no steps yet\n", id)
				return nil
			}
			fmt.Fprintf(w, "job %s, as %s ran it", id, h.Node)
			if h.BaseHeldoutLoss != nil {
				fmt.Fprintf(w, "; base model's held-out loss %.4f", *h.BaseHeldoutLoss)
			}
			if h.Thinned > 0 {
				fmt.Fprintf(w, "; %d older steps thinned out", h.Thinned)
			}
			fmt.Fprintln(w)
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "STEP\tLOSS\tHELD-OUT\tLR\tTOKENS/S\tSENT MB\t")
			for _, p := range h.Points {
				heldout := "-"
				if p.HeldoutLoss != nil {
					heldout = fmt.Sprintf("%.4f", *p.HeldoutLoss)
				}
				fmt.Fprintf(tw, "%d\t%.4f\t%s\t%.3g\t%.0f\t%.2f\t\n", p.Step, p.Loss, heldout, p.LR, p.TokensPerSec, float64(p.WireBytes)/1e6)
			}
			return tw.Flush()
		},
	}
}
