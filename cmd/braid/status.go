package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the cluster as a node sees it: members, leader, term, epoch",
		Flags: append(apiFlags(), &cli.BoolFlag{Name: "json", Usage: "print the status JSON"}),
		Action: func(c *cli.Context) error {
			cl, err := nodeClient(c)
			if err != nil {
				return err
			}
			st, err := cl.Status(c.Context)
			if err != nil {
				return err
			}
			out := c.App.Writer
			// Certificates near their end: a node whose certificate
			// expires is refused by its peers, which partitions the
			// cluster without another sign.
			certs, certErr := cl.Certs(c.Context)
			if c.Bool("json") {
				b, _ := json.MarshalIndent(st, "", "  ")
				fmt.Fprintln(out, string(b))
				for _, w := range certs.Warnings {
					fmt.Fprintln(c.App.ErrWriter, "warning:", w)
				}
				return nil
			}
			for _, w := range certs.Warnings {
				fmt.Fprintln(out, "WARNING:", w)
			}
			if certErr != nil {
				fmt.Fprintln(c.App.ErrWriter, "(certificates not shown:", certErr.Error()+")")
			}
			leader := st.Leader
			if leader == "" {
				leader = "(none)"
			}
			fmt.Fprintf(out, "self %s   leader %s   term %d   epoch %d: %s\n\n", st.Self, leader, st.Term, st.Epoch.ID, strings.Join(st.Epoch.Members, " → "))
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tGOSSIP\tQUIC\tDEVICE\tCORES\tGPUS\tMEMORY\tVERSION\tROLE")
			for _, m := range st.Members {
				role := ""
				switch {
				case m.Name == st.Leader:
					role = "leader"
				case m.Voter:
					role = "voter"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%.1f GiB\t%s\t%s\n", m.Name, m.State, m.Addr, m.QUICAddr, deviceColumn(m), m.Cores,
					gpusColumn(m), float64(m.Memory)/(1<<30), m.Version, role)
			}
			return tw.Flush()
		},
	}
}

// deviceColumn is the device kind a member computes on (cpu for members
// that do not say).
func deviceColumn(m node.MemberStatus) string {
	if m.Device == "" {
		return coordinator.DeviceCPU
	}
	return m.Device
}

// gpusColumn is a member's GPUs: how many its machine has and, on a cuda
// member, the one it computes on, e.g. "8 H200 (cuda:3)"; "-" for none.
func gpusColumn(m node.MemberStatus) string {
	switch {
	case m.GPU != nil:
		return fmt.Sprintf("%d %s (cuda:%d)", max(m.GPUs, 1), strings.TrimPrefix(m.GPU.Name, "NVIDIA "), m.GPU.Index)
	case m.GPUs > 0:
		return fmt.Sprint(m.GPUs)
	}
	return "-"
}
