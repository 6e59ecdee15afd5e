package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/node"
	"github.com/braidml/braid/node/push"
)

// The `braid data` commands that talk to a running node: push, register,
// ls and status.

func dataPushCommand() *cli.Command {
	return &cli.Command{
		Name:      "push",
		Usage:     "register a prepared dataset with the cluster and spread its shards over the members",
		ArgsUsage: "DIR",
		Description: "DIR (made by `braid data prepare`) is read here, where braid runs, and each of its files is uploaded\n" +
			"to the node behind --api (only those it lacks: run the command again to resume a push that failed);\n" +
			"the node verifies every shard and registers the dataset; the leader places each shard on --replicas\n" +
			"members, which pull it over QUIC. `braid data status NAME` shows the replicas.",
		Flags: append(append(apiFlags(),
			&cli.IntFlag{Name: "replicas", Value: node.DefaultReplicas, Usage: "copies of each shard (r)"},
			&cli.StringFlag{Name: "name", Usage: "register under this name instead of the manifest's"},
			&cli.BoolFlag{Name: "json", Usage: "print the registered dataset as JSON"}),
			pushWaitFlags()...), // --wait, --timeout (lifecycle.go)
		Action: func(c *cli.Context) error { return pushDataset(c, false) },
	}
}

func dataRegisterCommand() *cli.Command {
	return &cli.Command{
		Name:      "register",
		Usage:     "register a dataset that stays on this node (federated): no shard is ever sent to a peer",
		ArgsUsage: "--local DIR",
		Flags: append(apiFlags(),
			&cli.BoolFlag{Name: "local", Usage: "keep every shard on the node behind --api (required)"},
			&cli.StringFlag{Name: "name", Usage: "register under this name instead of the manifest's"},
			&cli.BoolFlag{Name: "json", Usage: "print the registered dataset as JSON"}),
		Action: func(c *cli.Context) error {
			if !c.Bool("local") {
				return fmt.Errorf("data register: only --local datasets are registered this way; use `braid data push` to share one")
			}
			return pushDataset(c, true)
		},
	}
}

func pushDataset(c *cli.Context, local bool) error {
	if c.NArg() != 1 {
		return fmt.Errorf("want one dataset directory, got %d arguments", c.NArg())
	}
	cl, err := nodeClient(c)
	if err != nil {
		return err
	}
	pushed, err := push.Dataset(c.Context, cl.PushTarget(), c.Args().First(), local)
	if err != nil {
		return err
	}
	req := node.AddDatasetRequest{Manifest: pushed.Manifest, Name: c.String("name"), Local: local}
	if !local {
		req.Replicas = c.Int("replicas")
	}
	d, err := cl.CreateDataset(c.Context, req)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if err := printJSON(c, d); err != nil {
			return err
		}
	} else {
		kind := fmt.Sprintf("%d replicas", d.Replicas)
		if d.Local {
			kind = "local to " + d.Source
		}
		fmt.Fprintf(c.App.Writer, "registered %s (%s): %d shards, %s\n", d.Name, d.ID[:12], len(d.Shards), kind)
	}
	if !local && c.Bool("wait") {
		return waitForReplicas(c, cl, d.ID)
	}
	return nil
}

func dataLsCommand() *cli.Command {
	return &cli.Command{
		Name:  "ls",
		Usage: "list the cluster's datasets",
		Flags: append(apiFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: func(c *cli.Context) error {
			cl, err := nodeClient(c)
			if err != nil {
				return err
			}
			ds, err := cl.Datasets(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, ds)
			}
			w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tID\tSHARDS\tBYTES\tSEQUENCES\tREPLICAS\tSOURCE")
			for _, d := range ds {
				var bytes int64
				seqs := 0
				for _, s := range d.Shards {
					bytes += s.Bytes
					seqs += s.Sequences
				}
				rep := fmt.Sprint(d.Replicas)
				if d.Local {
					rep = "local"
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", d.Name, d.ID[:12], len(d.Shards), bytes, seqs, rep, d.Source)
			}
			return w.Flush()
		},
	}
}

func dataStatusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show a dataset's placement and the health of its replicas",
		ArgsUsage: "NAME",
		Flags:     append(apiFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("want one dataset name or id")
			}
			cl, err := nodeClient(c)
			if err != nil {
				return err
			}
			st, err := cl.Dataset(c.Context, c.Args().First())
			if err != nil {
				return notFound(err, "no dataset %s (see `braid data ls`)", c.Args().First())
			}
			if c.Bool("json") {
				return printJSON(c, st)
			}
			w := c.App.Writer
			fmt.Fprintf(w, "dataset %s (%s), source %s, placement v%d\n", st.Name, st.ID[:12], st.Source, st.PlacementVersion)
			fmt.Fprintf(w, "%d shards: %d healthy, %d under-replicated\n", len(st.Shards), st.Healthy, st.UnderReplicated)
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SHARD\tSPLIT\tBYTES\tPLACED ON\tHELD BY")
			for _, s := range st.Shards {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", s.Hash[:12], s.Split, s.Bytes,
					strings.Join(st.Placement[s.Hash], ","), strings.Join(st.Held[s.Hash], ","))
			}
			tw.Flush()
			for m, e := range st.Errors {
				fmt.Fprintf(w, "%s: %s\n", m, e)
			}
			return nil
		},
	}
}

func printJSON(c *cli.Context, v any) error {
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
