package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/node/client"
)

// The operator's lifecycle commands: data rm, job rm, job resume, members,
// leave, force-leave, and the waits of data push --wait and job submit
// --wait/--watch.

// Exit codes of a wait for a job (job submit --wait or --watch, job
// watch): 0 when it completed, exitFailed (1) when it failed,
// exitJobCancelled when it was cancelled, exitJobGone when it was removed
// while waited for.
const (
	exitJobCancelled = 3
	exitJobGone      = 4
)

// jobExitHelp documents the exit codes of a wait for a job in --help.
const jobExitHelp = "Exit status of a wait: 0 the job completed, 1 it failed (or the command did), 3 it was cancelled,\n" +
	"4 it was removed while waited for, 130 interrupted (the job goes on)."

// jobEnded is nil for a completed job, else an error whose exit code says
// how it ended.
func jobEnded(js node.JobStatus) error {
	switch js.State {
	case coordinator.JobCompleted:
		return nil
	case coordinator.JobCancelled:
		return cli.Exit(fmt.Sprintf("job %s was cancelled at step %d/%d", js.ID, js.Step, js.Steps), exitJobCancelled)
	default:
		return cli.Exit(fmt.Sprintf("job %s %s at step %d/%d: %s", js.ID, js.State, js.Step, js.Steps, js.Error), exitFailed)
	}
}

// waitFlags are job submit's --wait and --watch.
func waitFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "wait", Usage: "block until the job ends; the exit status says how (see below)"},
		&cli.BoolFlag{Name: "watch", Usage: "as --wait, printing progress lines (as `braid job watch`) meanwhile"},
		&cli.IntFlag{Name: "keep-checkpoints", Usage: fmt.Sprintf("keep the job's newest `N` checkpoints (1..%d; default %d); older ones are deleted", coordinator.MaxCheckpoints, coordinator.MaxCheckpoints)},
	}
}

// afterSubmit waits for job id when --wait or --watch asks to.
func afterSubmit(c *cli.Context, cl *client.Client, id string) error {
	if !c.Bool("wait") && !c.Bool("watch") {
		return nil
	}
	err := watchJob(c, cl, id, 500*time.Millisecond, c.Bool("watch"))
	if errors.Is(err, c.Context.Err()) && c.Context.Err() != nil {
		return cli.Exit(fmt.Sprintf("interrupted; job %s goes on (braid job watch %s)", id, id), exitInterrupted)
	}
	if nf, ok := errors.AsType[*userError](err); ok {
		return cli.Exit(fmt.Sprintf("job %s was removed while waited for (%s)", id, nf.msg), exitJobGone)
	}
	return err
}

// checkKeepCheckpoints refuses a --keep-checkpoints out of range before
// anything is uploaded.
func checkKeepCheckpoints(c *cli.Context) error {
	if k := c.Int("keep-checkpoints"); k < 0 || k > coordinator.MaxCheckpoints {
		return fmt.Errorf("--keep-checkpoints %d: want 1..%d (0 or unset: %d)", k, coordinator.MaxCheckpoints, coordinator.MaxCheckpoints)
	}
	return nil
}

func dataRmCommand() *cli.Command {
	return &cli.Command{
		Name:      "rm",
		Usage:     "remove a dataset from the cluster; its shards are deleted from every node's store after --gc-grace",
		ArgsUsage: "NAME|ID",
		Description: "A dataset a submitted or running job trains on is not removed: cancel the job first. A local\n" +
			"(federated) dataset is removed through the API of the node that holds it.",
		Flags: apiFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("want one dataset name or id (see `braid data ls`)")
			}
			cl, err := nodeClient(c)
			if err != nil {
				return err
			}
			d, err := cl.DeleteDataset(c.Context, c.Args().First())
			if err != nil {
				return notFound(err, "no dataset %s (see `braid data ls`)", c.Args().First())
			}
			fmt.Fprintf(c.App.Writer, "removed dataset %s (%s)\n", d.Name, d.ID[:12])
			return nil
		},
	}
}

func jobRmCommand() *cli.Command {
	return &cli.Command{
		Name:      "rm",
		Usage:     "remove a job and its checkpoints from the cluster (they are deleted from the stores after --gc-grace)",
		ArgsUsage: "ID",
		Description: "A running job is not removed: cancel it first (braid job cancel ID), or pass --force, which\n" +
			"stops it on every member. Removed jobs no longer count against the cluster's limit of jobs.",
		Flags: append(apiFlags(), &cli.BoolFlag{Name: "force", Usage: "remove a running job too (it stops)"}),
		Action: func(c *cli.Context) error {
			id, cl, err := jobClientArg(c)
			if err != nil {
				return err
			}
			j, err := cl.DeleteJob(c.Context, id, c.Bool("force"))
			if err != nil {
				return noJob(err, id)
			}
			fmt.Fprintf(c.App.Writer, "removed job %s (%s)\n", j.ID, j.State)
			return nil
		},
	}
}

func jobResumeCommand() *cli.Command {
	return &cli.Command{
		Name:      "resume",
		Usage:     "restart a failed or cancelled job from its last checkpoint, under the same id",
		ArgsUsage: "ID",
		Description: "The job keeps its id, settings and checkpoints and is submitted again; when it starts, every\n" +
			"member restores its last checkpoint and trains on from that step (a job without a checkpoint\n" +
			"starts over). Its dataset must still be registered.\n\n" + jobExitHelp,
		Flags: append(apiFlags(),
			&cli.BoolFlag{Name: "wait", Usage: "block until the job ends; the exit status says how"},
			&cli.BoolFlag{Name: "watch", Usage: "as --wait, printing progress lines meanwhile"}),
		Action: func(c *cli.Context) error {
			id, cl, err := jobClientArg(c)
			if err != nil {
				return err
			}
			j, err := cl.ResumeJob(c.Context, id)
			if err != nil {
				return noJob(err, id)
			}
			from := "the start (it has no checkpoint)"
			if cp, ok := j.LastCheckpoint(); ok {
				from = fmt.Sprintf("its checkpoint at step %d", cp.Step)
			}
			fmt.Fprintf(c.App.Writer, "job %s resumed: it goes on from %s\n", j.ID, from)
			return afterSubmit(c, cl, id)
		},
	}
}

func membersCommand() *cli.Command {
	return &cli.Command{
		Name:  "members",
		Usage: "the cluster's members: name, address, state (alive, suspect, dead, left), raft role, last seen",
		Description: fmt.Sprintf("A member that failed or left stays listed for %v (braid node --reap-after), then is forgotten\n"+
			"(and may join again as new); `braid force-leave NAME` removes one at once.", node.DefaultReapAfter),
		Flags: append(apiFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: func(c *cli.Context) error {
			cl, err := nodeClient(c)
			if err != nil {
				return err
			}
			ms, err := cl.Members(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, ms)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tADDRESS\tSTATE\tROLE\tLAST SEEN")
			for _, m := range ms {
				seen := "now"
				if m.State != "alive" && m.State != "suspect" {
					seen = "-"
					if !m.LastSeen.IsZero() {
						seen = time.Since(m.LastSeen).Round(time.Second).String() + " ago"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.Addr, m.State, m.Role, seen)
			}
			return tw.Flush()
		},
	}
}

func leaveCommand() *cli.Command {
	return &cli.Command{
		Name:  "leave",
		Usage: "make the node behind --api leave the cluster gracefully and stop",
		Description: "The node hands leadership over if it leads, leaves the Raft configuration and announces its\n" +
			"departure by gossip, then its `braid node` process exits (as on SIGTERM). Its jobs go on on the others.",
		Flags: apiFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return fmt.Errorf("leave takes no arguments: it makes the node behind --api leave (to remove another, dead node: braid force-leave NAME)")
			}
			cl, err := nodeClient(c)
			if err != nil {
				return err
			}
			st, err := cl.Status(c.Context)
			if err != nil {
				return err
			}
			if err := cl.Leave(c.Context); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "node %s is leaving the cluster\n", st.Self)
			return nil
		},
	}
}

func forceLeaveCommand() *cli.Command {
	return &cli.Command{
		Name:      "force-leave",
		Usage:     "remove a dead member from the raft configuration and the member list",
		ArgsUsage: "NAME",
		Description: "For a node that is gone for good (crashed, its machine lost). A member that is alive is refused:\n" +
			"make it leave (braid leave --api its API); --force removes it all the same, but a node still\n" +
			"running joins again at its next gossip update, so stop it first.",
		Flags: append(apiFlags(), &cli.BoolFlag{Name: "force", Usage: "remove a member that gossip still sees alive"}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("want one member name (see `braid members`)")
			}
			name := c.Args().First()
			cl, err := nodeClient(c)
			if err != nil {
				return err
			}
			if err := cl.ForceLeave(c.Context, name, c.Bool("force")); err != nil {
				return notFound(err, "no member %s (see `braid members`)", name)
			}
			fmt.Fprintf(c.App.Writer, "removed member %s\n", name)
			return nil
		},
	}
}

// pushWaitFlags are data push's --wait and --timeout.
func pushWaitFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "wait", Usage: "return once every shard is held by the members it is placed on"},
		&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "with --wait: give up after this long, naming the missing replicas"},
	}
}

// waitForReplicas polls dataset key until every shard is held by each
// member its placement names, or --timeout passes (the error names the
// replicas still missing).
func waitForReplicas(c *cli.Context, cl *client.Client, key string) error {
	deadline := time.Now().Add(c.Duration("timeout"))
	var missing []string
	for {
		st, err := cl.Dataset(c.Context, key)
		if err != nil {
			return err
		}
		missing = missingReplicas(st)
		if len(missing) == 0 {
			fmt.Fprintf(c.App.Writer, "%d shards held as placed (%d replicas each)\n", len(st.Shards), st.Replicas)
			return nil
		}
		if time.Now().After(deadline) {
			shown := missing
			if len(shown) > 10 {
				shown = append(shown[:10:10], fmt.Sprintf("and %d more", len(missing)-10))
			}
			return fmt.Errorf("--wait: after %v, %d replicas are missing: %s (see `braid data status %s`)",
				c.Duration("timeout"), len(missing), strings.Join(shown, "; "), key)
		}
		select {
		case <-c.Context.Done():
			return c.Context.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// missingReplicas lists "SHARD on MEMBER" for every placed replica that is
// not held; one entry per shard not placed yet.
func missingReplicas(st node.DatasetStatus) []string {
	var out []string
	for _, s := range st.Shards {
		placed, ok := st.Placement[s.Hash]
		if !ok {
			out = append(out, fmt.Sprintf("shard %s not placed yet", s.Hash[:12]))
			continue
		}
		held := st.Held[s.Hash]
		for _, m := range placed {
			if !slices.Contains(held, m) {
				out = append(out, fmt.Sprintf("shard %s on %s", s.Hash[:12], m))
			}
		}
	}
	return out
}
