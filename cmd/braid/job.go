package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/node/client"
	"github.com/braidml/braid/node/push"
)

// jobCommand is `braid job`: submit, watch, status, list, cancel, export.
func jobCommand() *cli.Command {
	return &cli.Command{
		Name:  "job",
		Usage: "fine-tuning jobs across the cluster: submit, watch, status, list, cancel, export",
		Subcommands: []*cli.Command{
			jobSubmitCommand(), jobWatchCommand(), jobStatusCommand(), jobEventsCommand(), jobHistoryCommand(), jobListCommand(), jobCancelCommand(), jobExportCommand(),
			jobRmCommand(), jobResumeCommand(),
		},
	}
}

func jobSubmitCommand() *cli.Command {
	return &cli.Command{
		Name:  "submit",
		Usage: "submit a fine-tuning job; prints its id",
		Description: "--model (old name: --base) is the model directory to start from (config.json, model.safetensors or the shards\n" +
			"model.safetensors.index.json lists, and a tokenizer.json with tokenizer_config.json if the model has one), read here\n" +
			"and uploaded to the node behind --api (unless it holds it already); the other nodes fetch it from that node by\n" +
			"hash. --dataset is a dataset registered with `braid data push`.\n\n" + jobExitHelp,
		Flags: append(append(apiFlags(),
			&cli.StringFlag{Name: "model", Aliases: []string{"m", "base"}, Required: true, Usage: "the model `DIR` to start from (old name: --base)"},
			&cli.StringSliceFlag{Name: "dataset", Required: true, Usage: "dataset `NAME` or id (with --federated: each unit's local dataset)"},
			&cli.IntFlag{Name: "steps", Required: true, Usage: "optimizer steps"},
			&cli.IntFlag{Name: "global-batch", Required: true, Usage: "sequences per step, summed over all nodes (kept when nodes come and go)"},
			&cli.IntFlag{Name: "micro-batch", Usage: "sequences per forward/backward on a node (default 8, at most --global-batch)"},
			&cli.Float64Flag{Name: "lr", Usage: "peak learning rate (default from the training defaults)"},
			&cli.IntFlag{Name: "warmup", Usage: "warmup steps"},
			&cli.Float64Flag{Name: "weight-decay", Usage: "AdamW weight decay"},
			&cli.Float64Flag{Name: "clip", Usage: "gradient norm clip"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the data order"},
			&cli.IntFlag{Name: "checkpoint-every", Usage: "steps between checkpoints (0: only at the end)"},
			&cli.IntFlag{Name: "eval-every", Usage: "steps between held-out evaluations (0: none)"},
			&cli.IntFlag{Name: "replicas", Usage: "nodes holding each checkpoint (default 2)"},
			&cli.StringFlag{Name: "wire", Value: "fp32", Usage: "all-reduce element type on the wire: fp32 (exact), bf16, fp16 or int8"},
			&cli.StringFlag{Name: "device", Value: "cpu", Usage: "where the job runs: cpu or cuda; only the nodes started with that --device train it"},
			&cli.IntFlag{Name: "lora-rank", Usage: "train a LoRA adapter of rank `R` instead of the full model (LR defaults to 5e-3, weight decay to 0)"},
			&cli.Float64Flag{Name: "lora-alpha", Usage: "LoRA scale numerator (default 2R)"},
			&cli.Float64Flag{Name: "lora-dropout", Usage: "dropout on the adapter's input"},
			&cli.StringFlag{Name: "lora-targets", Usage: "projections to adapt, PEFT's target_modules (GPT-2: c_attn, c_proj, c_fc; the Llama family: q_proj ... down_proj; default: every projection of the base model's family)"},
			&cli.IntFlag{Name: "diloco", Usage: "low-communication mode: `H` local steps between all-reduces of the pseudo-gradient (DiLoCo; 0: every step)"},
			&cli.Float64Flag{Name: "outer-lr", Usage: "DiLoCo's outer learning rate (default 0.7)"},
			&cli.Float64Flag{Name: "outer-momentum", Usage: "DiLoCo's outer Nesterov momentum (default 0.9)"},
			&cli.BoolFlag{Name: "federated", Usage: "train each node only on its own local dataset (--dataset, repeated or comma-separated: one per unit); no shard crosses the wire"},
			&cli.BoolFlag{Name: "json", Usage: "print the submitted job as JSON"}),
			waitFlags()...), // --wait, --watch, --keep-checkpoints (lifecycle.go)
		Action: func(c *cli.Context) error {
			datasets := c.StringSlice("dataset")
			if err := checkKeepCheckpoints(c); err != nil {
				return err
			}
			if err := coordinator.ValidDevice(c.String("device")); err != nil {
				return fmt.Errorf("--device: %v", err)
			}
			if len(datasets) > 1 && !c.Bool("federated") {
				return fmt.Errorf("--dataset: one dataset (several only with --federated)")
			}
			cl, err := nodeClient(c)
			if err != nil {
				return err
			}
			base, _, err := push.Model(c.Context, cl.PushTarget(), c.String("model"))
			if err != nil {
				return fmt.Errorf("--model: %w", err)
			}
			req := node.JobRequest{Base: base, Dataset: datasets[0], Federated: c.Bool("federated"), Steps: c.Int("steps"), GlobalBatch: c.Int("global-batch"),
				MicroBatch: c.Int("micro-batch"), LR: c.Float64("lr"), Warmup: c.Int("warmup"), WeightDecay: c.Float64("weight-decay"),
				Clip: c.Float64("clip"), Seed: c.Uint64("seed"), CheckpointEvery: c.Int("checkpoint-every"), EvalEvery: c.Int("eval-every"),
				Replicas: c.Int("replicas"), Wire: c.String("wire"), Device: c.String("device"), KeepCheckpoints: c.Int("keep-checkpoints"),
				InnerSteps: c.Int("diloco"), OuterLR: c.Float64("outer-lr"), OuterMomentum: c.Float64("outer-momentum"),
				LoRARank: c.Int("lora-rank"), LoRAAlpha: c.Float64("lora-alpha"), LoRADropout: c.Float64("lora-dropout")}
			if t := c.String("lora-targets"); t != "" {
				targets, err := model.ParseLoRATargets(t)
				if err != nil {
					return err
				}
				req.LoRATargets = targets
			}
			if req.Federated {
				req.Datasets = datasets
			}
			j, err := cl.SubmitJob(c.Context, req)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if err := printJSON(c, j); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(c.App.Writer, j.ID)
			}
			return afterSubmit(c, cl, j.ID)
		},
	}
}

func jobArg(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("want one job id (see `braid job list`)")
	}
	return c.Args().First(), nil
}

// jobClientArg reads the job id argument and builds the client of the
// node behind --api.
func jobClientArg(c *cli.Context) (string, *client.Client, error) {
	id, err := jobArg(c)
	if err != nil {
		return "", nil, err
	}
	cl, err := nodeClient(c)
	return id, cl, err
}

// jobStatusArg reads the job id argument and fetches the job's status.
func jobStatusArg(c *cli.Context) (string, *client.Client, node.JobStatus, error) {
	id, cl, err := jobClientArg(c)
	if err != nil {
		return id, cl, node.JobStatus{}, err
	}
	js, err := cl.Job(c.Context, id)
	return id, cl, js, noJob(err, id)
}

// noJob is the error of a request about job id that the node does not
// know (404), and err otherwise.
func noJob(err error, id string) error {
	return notFound(err, "no job %s (see `braid job list`)", id)
}

// heldoutText says a job's held-out losses, or that none was evaluated:
// the API omits a loss that was not (0), which must not read as a
// perfect score.
func heldoutText(js *node.JobStatus) string {
	if js.HeldoutLoss == 0 {
		return "held-out loss not evaluated"
	}
	base := "base not evaluated"
	if js.BaseHeldoutLoss != 0 {
		base = fmt.Sprintf("base %.4f", js.BaseHeldoutLoss)
	}
	return fmt.Sprintf("held-out loss %.4f (step %d; %s)", js.HeldoutLoss, js.HeldoutStep, base)
}

func jobStatusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "a job's state, step, losses and members",
		ArgsUsage: "ID",
		Flags:     append(apiFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: func(c *cli.Context) error {
			_, _, js, err := jobStatusArg(c)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, js)
			}
			w := c.App.Writer
			fmt.Fprintf(w, "job %s: %s on %s, step %d/%d, loss %.4f, %s", js.ID, js.State, js.Spec.DeviceKind(), js.Step, js.Steps, js.Loss, heldoutText(&js))
			fmt.Fprintf(w, "\nepoch %d, members %s, %.0f tokens/s, step %.0f ms (%.0f ms waiting on the all-reduce), %.2f MB sent per node per step\n",
				js.Epoch, strings.Join(js.Members, ","), js.TokensPerSec, js.StepMS, js.WaitMS, float64(js.WireBytesPerStep)/1e6)
			if js.WeightsHash != "" {
				fmt.Fprintf(w, "weights %s\n", js.WeightsHash[:16])
			}
			if cp := len(js.Checkpoints); cp > 0 {
				last := js.Checkpoints[cp-1]
				fmt.Fprintf(w, "last checkpoint: step %d on %s\n", last.Step, strings.Join(last.Holders, ","))
			}
			if js.Waiting != "" {
				fmt.Fprintf(w, "waiting: %s\n", js.Waiting)
			}
			if js.Error != "" {
				fmt.Fprintf(w, "error: %s\n", js.Error)
			}
			return nil
		},
	}
}

func jobListCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "the cluster's jobs",
		Flags: append(apiFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
		Action: func(c *cli.Context) error {
			cl, err := nodeClient(c)
			if err != nil {
				return err
			}
			jobs, err := cl.Jobs(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, jobs)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tDEVICE\tSTEPS\tGLOBAL BATCH\tCHECKPOINT\tSUBMITTED BY")
			for _, j := range jobs {
				ck := "-"
				if cp, ok := j.LastCheckpoint(); ok {
					ck = fmt.Sprint(cp.Step)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", j.ID, j.State, j.Spec.DeviceKind(), j.Spec.Steps, j.Spec.GlobalBatch, ck, j.SubmittedBy)
			}
			return tw.Flush()
		},
	}
}

func jobCancelCommand() *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "cancel a submitted or running job",
		ArgsUsage: "ID",
		Flags:     apiFlags(),
		Action: func(c *cli.Context) error {
			id, cl, err := jobClientArg(c)
			if err != nil {
				return err
			}
			j, err := cl.CancelJob(c.Context, id)
			if err != nil {
				if nf := noJob(err, id); nf != err {
					return nf
				}
				return fmt.Errorf("cannot cancel job %s: %w", id, err)
			}
			fmt.Fprintf(c.App.Writer, "job %s: %s\n", j.ID, j.State)
			return nil
		},
	}
}

func jobWatchCommand() *cli.Command {
	return &cli.Command{
		Name:      "watch",
		Usage:     "follow a job until it ends: step, loss, held-out loss, tokens/s, ETA, members",
		ArgsUsage: "ID",
		Flags:     append(apiFlags(), &cli.DurationFlag{Name: "every", Value: 500 * time.Millisecond, Usage: "poll interval"}),
		Action: func(c *cli.Context) error {
			id, cl, err := jobClientArg(c)
			if err != nil {
				return err
			}
			return watchJob(c, cl, id, c.Duration("every"), true)
		},
	}
}

// watchJob polls job id every interval until it ends, showing its
// progress when show is set (a live bar on a terminal, else a line every
// tenth of the job), and returns jobEnded's error: nil when it completed,
// an exit code saying how it ended otherwise.
func watchJob(c *cli.Context, cl *client.Client, id string, every time.Duration, show bool) error {
	// A live bar on a terminal; otherwise (a log, a pipe) a line
	// every tenth of the job and whenever the members change.
	var bar *progressbar.ProgressBar
	tty := isTerminal(c.App.ErrWriter)
	lastMembers, lastStep := "", -1
	for {
		js, err := cl.Job(c.Context, id)
		if err != nil {
			return noJob(err, id)
		}
		desc := fmt.Sprintf("%s loss %.3f", js.State, js.Loss)
		if js.HeldoutLoss != 0 {
			desc += fmt.Sprintf(" held-out %.3f", js.HeldoutLoss)
		}
		members := strings.Join(js.Members, ",")
		desc += fmt.Sprintf(" %.0f tok/s [%s]", js.TokensPerSec, members)
		if js.Waiting != "" {
			desc += " waiting: " + js.Waiting
		}
		if !show {
			// --wait: nothing until the end.
		} else if tty {
			if bar == nil {
				bar = progressbar.NewOptions(js.Steps, progressbar.OptionSetWriter(c.App.ErrWriter),
					progressbar.OptionSetWidth(30), progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true),
					progressbar.OptionSetElapsedTime(true), progressbar.OptionThrottle(200*time.Millisecond))
			}
			bar.Describe(desc)
			bar.Set(js.Step)
		} else if members != lastMembers || js.Step >= lastStep+max(js.Steps/10, 1) || js.State.Final() && js.Step != lastStep {
			fmt.Fprintf(c.App.Writer, "step %4d/%d  %s\n", js.Step, js.Steps, desc)
			lastMembers, lastStep = members, js.Step
		}
		if js.State.Final() {
			if bar != nil {
				bar.Finish()
			}
			if show {
				fmt.Fprintf(c.App.Writer, "\njob %s %s at step %d/%d: loss %.4f, %s\n",
					js.ID, js.State, js.Step, js.Steps, js.Loss, heldoutText(&js))
			}
			return jobEnded(js)
		}
		select {
		case <-c.Context.Done():
			return c.Context.Err()
		case <-time.After(every):
		}
	}
}

func jobExportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write a job's model (its last checkpoint): config.json + model.safetensors (+ its tokenizer's files), or a LoRA job's PEFT adapter",
		ArgsUsage: "ID",
		Description: "A full fine-tuning job's model is written in Hugging Face's layout, in the dtype the base is stored in\n" +
			"(a bf16 base gives bf16). A LoRA job's adapter is written in PEFT's layout (adapter_config.json,\n" +
			"adapter_model.safetensors); --merged DIR also writes the base model with the adapter merged in, as a\n" +
			"plain model in the base's dtype (merged by the node). --format gguf also writes the model (a LoRA job's: its\n" +
			"base with the adapter merged in) as " + ggufFileName + " in --out, for llama.cpp and Ollama.\n" +
			"Beside the files go provenance.json (base, datasets, spec, the members that trained each range of\n" +
			"steps, checkpoints, held-out losses, every file's sha256), provenance.sig (signed by the node's cluster\n" +
			"certificate) and a README.md model card; check them with `braid verify --ca ca.pem DIR` (the record names\n" +
			"the safetensors files, not " + ggufFileName + ": add --allow-unrecorded " + ggufFileName + " after --format gguf).",
		Flags: append(append(apiFlags(), &cli.StringFlag{Name: "out", Required: true, Usage: "output `DIR` (created)"},
			&cli.StringFlag{Name: "merged", Usage: "LoRA jobs: also write the merged full model to `DIR`"},
			overwriteFlag("write into a non-empty --out or --merged, replacing the files of the names it writes")), formatFlags()...),
		Action: func(c *cli.Context) error {
			format, ggufType, err := exportFormat(c)
			if err != nil {
				return err
			}
			id, cl, js, err := jobStatusArg(c)
			if err != nil {
				return err
			}
			for _, flag := range []string{"out", "merged"} {
				if err := checkOutDir(c, flag); err != nil {
					return err
				}
			}
			out := c.String("out")
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			files := []string{"config.json", "model.safetensors"}
			lora := js.Spec.LoRARank > 0
			if lora {
				files = []string{model.AdapterConfigFile, model.AdapterWeightsFile}
			} else if c.String("merged") != "" {
				return fmt.Errorf("--merged: job %s trained the full model; its export is already a plain model", id)
			}
			// The tokenizer's files (a tokenizer.json's), which config.json
			// names: without them the model would not load.
			if n := len(js.Checkpoints); n > 0 {
				files = append(files, tokenizerFiles(js.Checkpoints[n-1].Tokenizer)...)
			}
			downloaded := map[string]string{} // file name → sha256, for the provenance record
			for _, name := range files {
				h, err := cl.DownloadJobFileSHA256(c.Context, id, name, filepath.Join(out, name))
				if err != nil {
					return err
				}
				downloaded[name] = h
			}
			if !lora {
				if err := exportInBaseDtype(c, cl, id, out); err != nil {
					return err
				}
			}
			fmt.Fprintf(c.App.Writer, "wrote %s (%s)\n", out, strings.Join(files, ", "))
			if err := exportProvenance(c, cl, id, out, downloaded); err != nil {
				return err
			}
			if merged := c.String("merged"); merged != "" && lora {
				if err := exportMerged(c, cl, id, merged); err != nil {
					return err
				}
			}
			var base string // a LoRA job's base, downloaded once for --format gguf
			if lora && format == formatGGUF {
				if base, err = os.MkdirTemp("", "braid-base-"); err != nil {
					return err
				}
				defer os.RemoveAll(base)
				for _, f := range append([]string{"config.json", "model.safetensors"}, tokenizerFiles(js.Spec.Base.Tokenizer)...) {
					if err := cl.DownloadJobFile(c.Context, id, "base-"+f, filepath.Join(base, f)); err != nil {
						return err
					}
				}
			}
			if format == formatGGUF {
				return exportJobGGUF(c, id, out, base, ggufType)
			}
			return nil
		},
	}
}

// exportInBaseDtype rewrites the full fine-tuning export in out in the
// dtype the job's base is stored in (its config.json's torch_dtype), as
// transformers' save_pretrained of a bfloat16 model would: the job trains
// float32 weights and its checkpoints keep them (a resumed job continues
// from them exactly), so rounding happens here, on the way out. A float32
// base leaves the export as it is.
func exportInBaseDtype(c *cli.Context, cl *client.Client, id, out string) error {
	tmp, err := os.MkdirTemp("", "braid-base-config-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	path := filepath.Join(tmp, "config.json")
	if err := cl.DownloadJobFile(c.Context, id, "base-config.json", path); err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !json.Valid(b) {
		return fmt.Errorf("the job's base config.json is not JSON")
	}
	dtype, ok := model.NarrowDtype(b)
	if !ok {
		return nil
	}
	ck, err := model.LoadCheckpoint(out)
	if err != nil {
		return err
	}
	return model.SaveCheckpointAs(out, ck.Config, ck.Tokenizer, ck.Params, model.WeightsFormat{Dtype: dtype})
}

// tokenizerFiles lists, sorted, the names of a model's tokenizer files
// (coordinator.ModelRef.Tokenizer, Checkpoint.Tokenizer) that are safe to
// write into a directory: the names the coordinator admits (a node that
// sent another is ignored).
func tokenizerFiles(files map[string]string) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if coordinator.ValidTokenizerFile(name) {
			out = append(out, name)
		}
	}
	return out
}
