package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
)

// getJSON fetches path from the API into v, with errors that say which
// node and what went wrong.
func getJSON(ctx context.Context, c *cli.Context, path string, v any) error {
	return callAPI(ctx, c, http.MethodGet, path, nil, v, 10*time.Second)
}

// callAPI sends body (JSON, nil for none) to the API and decodes the answer
// into v.
func callAPI(ctx context.Context, c *cli.Context, method, path string, body, v any, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := newAPIRequest(ctx, c, method, path, rd)
	if err != nil {
		return err
	}
	url := req.URL.String()
	resp, err := apiDo(c, req)
	if err != nil {
		return fmt.Errorf("cannot reach the node API at %s (is `braid node` running there? set --api or BRAID_API): %w", c.String("api"), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return apiError(c, req, resp, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: unexpected response: %w", url, err)
	}
	return nil
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the cluster as a node sees it: members, leader, term, epoch",
		Flags: append(apiFlags(), &cli.BoolFlag{Name: "json", Usage: "print the status JSON"}),
		Action: func(c *cli.Context) error {
			var st node.Status
			if err := getJSON(c.Context, c, "/v1/status", &st); err != nil {
				return err
			}
			out := c.App.Writer
			// Certificates near their end: a node whose certificate
			// expires is refused by its peers, which partitions the
			// cluster without another sign.
			var certs node.CertsStatus
			certErr := getJSON(c.Context, c, "/v1/certs", &certs)
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
