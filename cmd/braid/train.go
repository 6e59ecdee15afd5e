package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/cudamodel"
	"github.com/braidml/braid/provenance"
	"github.com/braidml/braid/shard"
	"github.com/braidml/braid/train"
)

func trainCommand() *cli.Command {
	d, dl := train.DefaultConfig(), train.DefaultLoRAConfig()
	return &cli.Command{
		Name:  "train",
		Usage: "train a model in this process on text files or directories",
		Description: "Trains from scratch (--config, byte-level tokenizer) or from the checkpoint in --model\n" +
			"(with its tokenizer), or continues the run saved in --resume, printing step, loss, learning rate and tokens/s, and held-out loss every\n" +
			"--eval-every steps. The checkpoint in --out is rewritten atomically at every evaluation\n" +
			"and at the end (model.safetensors, config.json, training_state.safetensors).\n\n" +
			"With --lora-rank R it trains a LoRA adapter on the frozen base in --model instead: --out then\n" +
			"holds the adapter in PEFT's layout (adapter_model.safetensors, adapter_config.json, loadable\n" +
			"with peft.PeftModel.from_pretrained) and training_state.safetensors; --merged DIR also writes\n" +
			"the base with the adapter merged in, a plain checkpoint. Unless given, the learning rate is\n" +
			fmt.Sprintf("then %g and weight decay %g. --resume of an adapter directory continues it on the base its\n", dl.LR, dl.WeightDecay) +
			"adapter_config.json names (base_model_name_or_path), or on --model if given.\n\n" +
			"Every save also writes provenance.json (the base's files, each input file's name, sha256, documents and\n" +
			"tokens, the configuration, held-out losses, every file's sha256) and a README.md model card; unsigned\n" +
			"unless --sign-key and --sign-cert are given (then provenance.sig). Check with `braid verify [--allow-unsigned] DIR`.",
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "input", Aliases: []string{"i"}, Usage: "text `PATH` (file or directory, repeatable)", Required: true},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "checkpoint `DIR` to write", Required: true},
			&cli.StringFlag{Name: "model", Aliases: []string{"m", "init"}, Usage: "start from the checkpoint in `DIR` instead of a fresh model (old name: --init)"},
			&cli.StringFlag{Name: "resume", Usage: "continue the run saved in `DIR` (weights, optimizer, step, data position); --steps is the total"},
			&cli.StringFlag{Name: "config", Value: "tiny", Usage: "model preset for a fresh model: tiny or small"},
			&cli.IntFlag{Name: "steps", Value: d.Steps, Usage: "optimizer steps"},
			&cli.IntFlag{Name: "batch", Value: d.Batch, Usage: "sequences per step"},
			&cli.IntFlag{Name: "seq-len", Usage: "tokens per sequence (default: the model's context)"},
			&cli.Float64Flag{Name: "lr", Value: d.LR, Usage: fmt.Sprintf("peak learning rate (with --lora-rank: %g)", dl.LR)},
			&cli.IntFlag{Name: "warmup", Value: d.Warmup, Usage: "linear warmup steps"},
			&cli.Float64Flag{Name: "weight-decay", Value: d.WeightDecay, Usage: fmt.Sprintf("AdamW weight decay on matrices (with --lora-rank: %g, on the adapter's)", dl.WeightDecay)},
			&cli.Float64Flag{Name: "clip", Value: d.Clip, Usage: "global gradient-norm clip (0: off)"},
			&cli.Uint64Flag{Name: "seed", Value: d.Seed, Usage: "seed of initialisation and sampling"},
			&cli.IntFlag{Name: "eval-every", Value: d.EvalEvery, Usage: "evaluate held-out loss and save every N steps (0: only at the end)"},
			&cli.IntFlag{Name: "eval-batches", Value: d.EvalBatches, Usage: "batches per held-out evaluation"},
			&cli.IntFlag{Name: "holdout-every", Value: 20, Usage: "hold out about one document in N (by content hash)"},
			&cli.Int64Flag{Name: "max-bytes", Usage: "read at most about this many bytes of corpus (0: all)"},
			cutAboveFlag(), documentKiBFlag(),
			&cli.IntFlag{Name: "log-every", Value: 10, Usage: "print a progress line every N steps"},
			&cli.IntFlag{Name: "threads", Usage: "compute threads (default: all cores)"},
			&cli.StringFlag{Name: "kernel", Value: "auto", Usage: "matmul micro-kernel: auto, avx512, avx2 or generic"},
			&cli.IntFlag{Name: "lora-rank", Usage: "train a LoRA adapter of rank `R` on the frozen model in --model (0: train every weight)"},
			&cli.Float64Flag{Name: "lora-alpha", Usage: "the adapter's update is scaled by alpha/R (0: 2R)"},
			&cli.Float64Flag{Name: "lora-dropout", Usage: "dropout on the adapter's input, in [0, 1)"},
			&cli.StringFlag{Name: "lora-targets", Usage: "projections to adapt, PEFT's target_modules: GPT-2's c_attn, c_proj (both), attn.c_proj, mlp.c_proj, c_fc; the Llama family's q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (default: every projection of the model's family)"},
			&cli.StringFlag{Name: "merged", Usage: "with --lora-rank: also write the base with the adapter merged in to `DIR` at the end, in the base's dtype and shard layout"},
			&cli.BoolFlag{Name: "bf16-base", Usage: "LoRA on a Llama-family base stored in F32 or F16: hold the frozen base in bf16 too, rounded (a base stored in bf16 is held so anyway)"},
			&cli.StringFlag{Name: "metrics", Usage: "write a JSON line per step to `FILE` as training goes (step, loss, lr, grad_norm, tokens, tokens_per_sec, elapsed_s, and heldout_loss where evaluated); - is stdout, the progress lines then go to stderr"},
			overwriteFlag("write into a non-empty --out or --merged, replacing the files of the names it writes (not needed for --out of the --resume directory)"),
		}, append(deviceFlags(), trainProvenanceFlags()...)...),
		Action: runTrain,
	}
}

func runTrain(c *cli.Context) error {
	if err := setCompute(c.Int("threads"), c.String("kernel")); err != nil {
		return err
	}
	out := c.App.Writer
	resume, modelDir := c.String("resume"), c.String("model")
	if !sameDir(c.String("out"), resume) {
		if err := checkOutDir(c, "out"); err != nil {
			return err
		}
	}
	if err := checkOutDir(c, "merged"); err != nil {
		return err
	}
	lora, err := loraMode(c)
	if err != nil {
		return err
	}
	metrics, out, err := openMetrics(c, resume != "")
	if err != nil {
		return err
	}
	defer metrics.Close()
	prov, err := newTrainRecord(c)
	if err != nil {
		return err
	}
	cfg := train.DefaultConfig()
	if lora != loraOff {
		cfg = train.DefaultLoRAConfig()
	}
	cfg.Steps, cfg.Batch, cfg.SeqLen = c.Int("steps"), c.Int("batch"), c.Int("seq-len")
	cfg.Warmup, cfg.Clip = c.Int("warmup"), c.Float64("clip")
	if lora == loraOff || c.IsSet("lr") {
		cfg.LR = c.Float64("lr")
	}
	if lora == loraOff || c.IsSet("weight-decay") {
		cfg.WeightDecay = c.Float64("weight-decay")
	}
	cfg.Seed, cfg.EvalEvery, cfg.EvalBatches = c.Uint64("seed"), c.Int("eval-every"), c.Int("eval-batches")
	if err := cfg.Validate(); err != nil {
		return err
	}

	// The model: from a checkpoint, or fresh from a preset.
	var (
		mc     model.Config
		tok    model.Tokenizer = model.ByteTokenizer{}
		params []float32
		// baseFormat is how the base's weights are stored: --merged
		// writes the merged model so.
		baseFormat model.WeightsFormat
	)
	if resume != "" && modelDir != "" && lora != loraResume {
		return fmt.Errorf("--model and --resume exclude each other: --resume continues a run, --model starts a new one from its weights (or, resuming a LoRA adapter, names its base)")
	}
	if (resume != "" || modelDir != "") && c.IsSet("config") {
		return fmt.Errorf("--config sets the shape of a new model; with --model or --resume the checkpoint's config.json does")
	}
	baseDir := modelDir + resume
	if lora == loraResume && modelDir == "" {
		ac, err := model.ReadAdapterConfig(resume)
		if err != nil {
			return err
		}
		if ac.BaseModel == "" {
			return fmt.Errorf("%s/%s names no base model (base_model_name_or_path); give it with --model", resume, model.AdapterConfigFile)
		}
		baseDir = ac.BaseModel
	} else if lora == loraResume {
		baseDir = modelDir
	}
	if err := prov.setBase(baseDir, c.String("config")); err != nil {
		return err
	}
	// A LoRA run's frozen Llama-family base is read straight into bf16
	// when stored so (the same maths in half the memory), or rounded on
	// --bf16-base: held, and params stays nil.
	var held *model.HeldBase
	if baseDir != "" {
		var ck *model.Checkpoint
		var err error
		if lora != loraOff {
			ck, held, err = model.LoadCheckpointHeld(baseDir, c.Bool("bf16-base"))
		} else {
			ck, err = model.LoadCheckpoint(baseDir)
		}
		if err != nil {
			return err
		}
		mc, tok, params, baseFormat = ck.Config, ck.Tokenizer, ck.Params, ck.Format
	} else {
		var err error
		if mc, err = model.Preset(c.String("config"), tok.Vocab()); err != nil {
			return err
		}
	}
	T := cfg.SeqLen
	if T == 0 || T > mc.Context {
		T = mc.Context
	}
	cfg.SeqLen = T
	dev, prec, err := openDevice(c, out)
	if err != nil {
		return err
	}
	if dev != nil {
		defer dev.Close()
	}
	if c.Bool("bf16-base") && (held == nil || dev != nil) {
		return fmt.Errorf("--bf16-base holds the frozen base of a LoRA run (--lora-rank or --resume of an adapter) of a Llama-family model on the CPU; this run is none")
	}
	if dev != nil && held != nil { // the GPU takes float32 weights
		ck, err := model.LoadCheckpoint(baseDir)
		if err != nil {
			return err
		}
		params, held = ck.Params, nil
	}
	var m *model.Model
	if dev != nil {
		m, err = model.NewInference(mc, 1, 1) // the host copy of the weights; the GPU holds the activations
	} else if held != nil {
		m, err = model.NewFrozenBF16From(held, cfg.Batch, T)
	} else {
		m, err = model.New(mc, cfg.Batch, T)
	}
	if err != nil {
		return err
	}
	switch {
	case params != nil:
		m.SetBaseWeights(params)
	case held == nil:
		m.Init(cfg.Seed)
	}
	var adapter *model.LoRA
	switch lora {
	case loraNew:
		lc := model.LoRAConfig{Rank: c.Int("lora-rank"), Alpha: c.Float64("lora-alpha"), Dropout: c.Float64("lora-dropout"), BaseModel: modelDir}
		if lc.Alpha == 0 {
			lc.Alpha = 2 * float64(lc.Rank)
		}
		lc.Targets = model.DefaultLoRATargetsFor(mc)
		if c.IsSet("lora-targets") {
			if lc.Targets, err = model.ParseLoRATargets(c.String("lora-targets")); err != nil {
				return fmt.Errorf("--lora-targets: %w", err)
			}
		}
		if adapter, err = model.NewLoRA(mc, lc); err != nil {
			return err
		}
		adapter.Init(cfg.Seed)
	case loraResume:
		if adapter, err = model.LoadAdapter(resume, mc); err != nil {
			return err
		}
		if modelDir != "" {
			adapter.Config.BaseModel = modelDir
		}
	}
	if adapter != nil {
		if err := m.AttachLoRA(adapter); err != nil {
			return err
		}
	}

	start := time.Now()
	opt, err := corpusOptions(c, c.Int("holdout-every"))
	if err != nil {
		return err
	}
	opt.File = prov.file
	corpus, err := train.LoadCorpus(c.StringSlice("input"), tok, opt)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "corpus: %d files (%d skipped as empty or binary), %.1f MB, %s, %d training and %d held-out tokens, read in %s\n",
		corpus.Files, corpus.Skipped, float64(corpus.Bytes)/1e6, documentsText(corpus), len(corpus.Train), len(corpus.Heldout), time.Since(start).Round(time.Millisecond))
	if len(corpus.Heldout) < 2 && opt.HoldoutEvery > 0 {
		fmt.Fprintf(c.App.ErrWriter, "warning: the held-out split is empty (none of %d documents was held out at --holdout-every %d): held-out loss will not be evaluated; lower --holdout-every, or cut large files into more documents with a lower --cut-above-mib or --document-kib\n",
			corpus.Documents, opt.HoldoutEvery)
	}
	where := fmt.Sprintf("kernels %s on %d threads", kernels.ActiveImpl(), kernels.Threads())
	if dev != nil {
		where = fmt.Sprintf("on %s in %s", dev.Info, prec)
	}
	fmt.Fprintf(out, "model: %d layers, %d channels, %d heads, context %d, vocab %d: %.2f M parameters; %s\n",
		mc.Layers, mc.Dim, mc.Heads, mc.Context, mc.Vocab, float64(mc.NumParams())/1e6, where)
	if adapter != nil {
		lc := adapter.Config
		held := ""
		if m.BaseHeldBF16() {
			held = ", held in bf16"
		}
		fmt.Fprintf(out, "LoRA: rank %d, alpha %g (scale %g), dropout %g, on %s: %d trainable parameters (%.2f%% of the model's); the base in %s stays frozen%s\n",
			lc.Rank, lc.Alpha, lc.Scale(), lc.Dropout, strings.Join(lc.Targets, ","), adapter.NumParams(),
			100*float64(adapter.NumParams())/float64(mc.NumParams()), baseDir, held)
	}

	spec := trainSpec{Train: cfg, Resume: resume}
	if baseDir == "" {
		spec.Preset = c.String("config")
	}
	if adapter != nil {
		spec.LoRA = &adapter.Config
	}
	if err := prov.setSpec(spec); err != nil {
		return err
	}
	var tr *train.Trainer
	if dev != nil {
		var dm *cudamodel.Model
		if dm, err = cudamodel.New(dev, mc, cfg.Batch, T, prec); err != nil {
			return err
		}
		defer dm.Close()
		tr, err = train.NewOnDevice(cfg, m, dm, tok, corpus)
	} else {
		tr, err = train.New(cfg, m, tok, corpus)
	}
	if err != nil {
		return err
	}
	if resume != "" {
		if err := tr.Resume(resume); err != nil {
			return err
		}
		fmt.Fprintf(out, "resuming %s at step %d of %d\n", resume, tr.Opt.Step, cfg.Steps)
		if tr.SavedSteps != cfg.Steps {
			fmt.Fprintf(out, "note: the saved run was planned for %d steps; the learning-rate schedule is stretched to %d from here\n", tr.SavedSteps, cfg.Steps)
		}
	}
	if cfg.EvalEvery > 0 && resume == "" && len(tr.Corpus.Heldout) > 1 {
		r, err := tr.Eval()
		if err != nil {
			return err
		}
		printEval(out, 0, r)
		prov.eval(0, r.Loss)
		if err := metrics.write(withEval(metricsLine{}, r)); err != nil {
			return err
		}
	}
	if err := trainLoop(c, out, tr, tok, baseFormat, metrics, prov); err != nil {
		return err
	}
	return metrics.Close()
}

// trainLoop runs the steps, logging and checkpointing (with the provenance
// record beside each save); on interrupt it saves and stops. --merged
// writes the merged model as baseFormat says (the base's dtype and shards).
func trainLoop(c *cli.Context, out io.Writer, tr *train.Trainer, tok model.Tokenizer, baseFormat model.WeightsFormat, metrics *metricsLog, prov *trainRecord) error {
	cfg := tr.Config
	dir, logEvery := c.String("out"), max(1, c.Int("log-every"))
	var (
		tokens  int
		elapsed time.Duration
		saved   []provenance.File // the files of the last save, as its record names them
	)
	save := func() error {
		if err := tr.SaveCheckpoint(dir, tok); err != nil {
			return err
		}
		var err error
		saved, err = prov.write(dir, tr.Opt.Step, nil)
		return err
	}
	for step := tr.Opt.Step + 1; step <= cfg.Steps; step++ {
		if err := c.Context.Err(); err != nil {
			fmt.Fprintf(out, "interrupted at step %d; saving %s\n", step-1, dir)
			if err := save(); err != nil {
				return err
			}
			return cli.Exit("interrupted", exitInterrupted)
		}
		st, err := tr.Step()
		if err != nil {
			return err
		}
		tokens += st.Tokens
		elapsed += st.Duration
		if step%logEvery == 0 || step == 1 || step == cfg.Steps {
			fmt.Fprintf(out, "step %5d/%d | loss %.4f | lr %.2e | grad norm %.3f | %.0f tokens/s\n",
				step, cfg.Steps, st.Loss, st.LR, st.GradNorm, float64(tokens)/elapsed.Seconds())
			tokens, elapsed = 0, 0
		}
		line := metrics.step(st)
		if (cfg.EvalEvery > 0 && step%cfg.EvalEvery == 0) || step == cfg.Steps {
			if len(tr.Corpus.Heldout) > 1 {
				r, err := tr.Eval()
				if err != nil {
					return err
				}
				printEval(out, step, r)
				prov.eval(step, r.Loss)
				line = withEval(line, r)
			} else if step == cfg.Steps {
				fmt.Fprintf(out, "step %5d | held-out loss not evaluated: the held-out split is empty\n", step)
			}
			if err := save(); err != nil {
				return err
			}
		}
		if err := metrics.write(line); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "saved %s\n", dir)
	if merged := c.String("merged"); merged != "" {
		params, err := tr.Model.MergedWeights(tr.LoRA)
		if err != nil {
			return err
		}
		if err := model.SaveCheckpointAs(merged, tr.Model.Config, tok, params, baseFormat); err != nil {
			return err
		}
		if _, err := prov.write(merged, tr.Opt.Step, saved); err != nil {
			return err
		}
		fmt.Fprintf(out, "saved the merged model (base + adapter) to %s\n", merged)
	}
	return nil
}

// How braid train uses LoRA.
type loraUse int

const (
	loraOff    loraUse = iota // train every weight
	loraNew                   // --lora-rank: a new adapter on --model
	loraResume                // --resume of an adapter directory
)

// loraMode reads and cross-checks the LoRA flags.
func loraMode(c *cli.Context) (loraUse, error) {
	rank, resume := c.Int("lora-rank"), c.String("resume")
	adapterDir := false
	if resume != "" {
		_, err := os.Stat(filepath.Join(resume, model.AdapterConfigFile))
		adapterDir = err == nil
	}
	others := c.IsSet("lora-alpha") || c.IsSet("lora-dropout") || c.IsSet("lora-targets")
	switch {
	case rank < 0:
		return loraOff, fmt.Errorf("--lora-rank %d: want ≥ 1, or 0 to train every weight", rank)
	case adapterDir && (rank > 0 || others):
		return loraOff, fmt.Errorf("--resume %s continues a LoRA adapter whose settings are in its %s; drop the --lora-* flags", resume, model.AdapterConfigFile)
	case adapterDir:
		return loraResume, nil
	case rank == 0 && others:
		return loraOff, fmt.Errorf("--lora-alpha, --lora-dropout and --lora-targets need --lora-rank")
	case rank == 0 && c.IsSet("merged"):
		return loraOff, fmt.Errorf("--merged writes the base with a trained adapter merged in: it needs --lora-rank")
	case rank == 0:
		return loraOff, nil
	case resume != "":
		return loraOff, fmt.Errorf("--resume %s holds no %s: it is not a LoRA run (drop --lora-rank to continue it)", resume, model.AdapterConfigFile)
	case c.String("model") == "":
		return loraOff, fmt.Errorf("--lora-rank adapts a trained model: give its checkpoint with --model")
	}
	return loraNew, nil
}

// setCompute applies --threads and --kernel.
func setCompute(threads int, impl string) error {
	i, err := kernels.ParseImpl(impl)
	if err != nil {
		return err
	}
	if !kernels.Supported(i) {
		return fmt.Errorf("kernel %s is not supported on this CPU (supported: %v)", i, kernels.Implementations())
	}
	kernels.SetImpl(i)
	if threads < 0 {
		return errors.New("--threads must be ≥ 0")
	}
	kernels.SetThreads(threads)
	return nil
}

// cutAboveFlag and documentKiBFlag say how train and eval cut a large file
// into documents, as data prepare does by default.
func cutAboveFlag() cli.Flag {
	return &cli.IntFlag{Name: "cut-above-mib", Value: int(shard.DefaultConfig().CutAbove >> 20),
		Usage: "cut a file of more MiB into documents of about --document-kib, at blank lines or else into fixed-size pieces, so that one large file gets a held-out split (0: a file is one document)"}
}

func documentKiBFlag() cli.Flag {
	return &cli.IntFlag{Name: "document-kib", Value: int(shard.DefaultConfig().DocumentBytes >> 10),
		Usage: "the size, in KiB, of the documents a file over --cut-above-mib is cut into"}
}

// corpusOptions reads the corpus flags shared by train and eval.
func corpusOptions(c *cli.Context, holdoutEvery int) (train.CorpusOptions, error) {
	if c.Int("cut-above-mib") < 0 || c.Int("document-kib") < 1 {
		return train.CorpusOptions{}, fmt.Errorf("--cut-above-mib %d and --document-kib %d: want ≥ 0 and ≥ 1", c.Int("cut-above-mib"), c.Int("document-kib"))
	}
	return train.CorpusOptions{HoldoutEvery: holdoutEvery, MaxBytes: c.Int64("max-bytes"),
		CutAbove: int64(c.Int("cut-above-mib")) << 20, DocumentBytes: int64(c.Int("document-kib")) << 10}, nil
}

// documentsText says how many documents a corpus has and how large files
// were cut: "199 documents (1 file cut at blank lines)".
func documentsText(c *train.Corpus) string {
	s := plural(c.Documents, "document")
	switch {
	case c.CutParagraphs > 0 && c.CutFixed > 0:
		s += fmt.Sprintf(" (%s cut at blank lines, %d without them into fixed-size pieces)", plural(c.CutParagraphs, "file"), c.CutFixed)
	case c.CutParagraphs > 0:
		s += fmt.Sprintf(" (%s cut at blank lines)", plural(c.CutParagraphs, "file"))
	case c.CutFixed > 0:
		s += fmt.Sprintf(" (%s without blank lines cut into fixed-size pieces)", plural(c.CutFixed, "file"))
	}
	return s
}

// printEval prints a held-out evaluation line.
func printEval(out io.Writer, step int, r train.EvalResult) {
	fmt.Fprintf(out, "step %5d | held-out loss %.4f | perplexity %.2f | %.3f bits/byte | %d tokens\n", step, r.Loss, r.Perplexity, r.BitsPerByte, r.Tokens)
}
