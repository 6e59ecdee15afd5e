package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/cudamodel"
	"github.com/braidml/braid/train"
)

// benchModels are the shapes `braid bench train` knows by name, those of
// the GPU peers: GPT-2 124M and the bundled base
// (../shared/bench/torch_gpu.py), and SmolLM2-135M's Llama shape
// (scripts/torch_llama_gpu.py).
var benchModels = map[string]struct {
	cfg  model.Config
	B, T int
}{
	"gpt2-124m": {model.Config{Vocab: 50257, Context: 1024, Dim: 768, Layers: 12, Heads: 12}, 16, 1024},
	"small":     {model.Config{Vocab: 257, Context: 256, Dim: 192, Layers: 6, Heads: 6}, 8, 256},
	"smollm2-135m": {model.Config{Arch: model.ArchLlama, Vocab: 49152, Context: 8192, Dim: 576, Layers: 30, Heads: 9, KVHeads: 3,
		Hidden: 1536, HeadDim: 64, NormEps: 1e-5, RopeTheta: 100000}, 16, 1024},
}

func benchTrainCommand() *cli.Command {
	return &cli.Command{
		Name:  "train",
		Usage: "tokens/s of a full fine-tuning step (forward, backward, clip, AdamW) on random tokens",
		Description: "Times the training step the way ../shared/bench/torch_gpu.py times PyTorch's, with\n" +
			"the same shapes and random initialisation: --model gpt2-124m (batch 16 × 1024), small\n" +
			"(the bundled base's shapes, batch 8 × 256) or smollm2-135m (a Llama, batch 16 × 1024;\n" +
			"its peer is scripts/torch_llama_gpu.py), after --warmup steps, over --steps steps.\n" +
			"peak_gib is the device memory the model holds (it allocates everything up front).",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Value: "gpt2-124m", Usage: "gpt2-124m, small or smollm2-135m"},
			&cli.IntFlag{Name: "batch", Usage: "sequences per step (default: the model's)"},
			&cli.IntFlag{Name: "seq", Usage: "tokens per sequence (default: the model's)"},
			&cli.IntFlag{Name: "steps", Value: 10, Usage: "timed steps"},
			&cli.IntFlag{Name: "warmup", Value: 3, Usage: "steps before timing"},
			&cli.BoolFlag{Name: "json", Usage: "one JSON object"},
			&cli.IntFlag{Name: "lora-rank", Usage: "train a LoRA adapter of rank `R` (alpha 2R) instead of every weight, as the peer's bf16+lora8 row: on GPT-2's c_attn, c_proj and c_fc, on a Llama's seven projections"},
			&cli.IntFlag{Name: "profile", Usage: "on a GPU: after timing, run `N` more steps with per-kernel timing and print the device time per kernel on stderr"},
			&cli.BoolFlag{Name: "breakdown", Usage: "on a GPU: also time forward, backward, clip and AdamW apart (waiting for the GPU after each)"},
		}, deviceFlags()...),
		Action: runBenchTrain,
	}
}

func runBenchTrain(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("bench train takes no arguments, got %q", c.Args().Slice())
	}
	bm, ok := benchModels[c.String("model")]
	if !ok {
		return fmt.Errorf("--model %q: want gpt2-124m, small or smollm2-135m", c.String("model"))
	}
	B, T := bm.B, bm.T
	if c.Int("batch") > 0 {
		B = c.Int("batch")
	}
	if c.Int("seq") > 0 {
		T = min(c.Int("seq"), bm.cfg.Context)
	}
	steps, warm := max(1, c.Int("steps")), max(0, c.Int("warmup"))
	info := c.App.ErrWriter
	if info == nil {
		info = os.Stderr
	}
	dev, prec, err := openDevice(c, info)
	if err != nil {
		return err
	}
	host, err := model.NewInference(bm.cfg, 1, 1)
	if err != nil {
		return err
	}
	host.Init(0)
	rng := rand.New(rand.NewPCG(0, 1))
	tokens := make([]int32, B*(T+1))
	for i := range tokens {
		tokens[i] = int32(rng.IntN(bm.cfg.Vocab))
	}
	inputs, targets := make([]int32, B*T), make([]int32, B*T)
	for b := 0; b < B; b++ {
		copy(inputs[b*T:], tokens[b*(T+1):b*(T+1)+T])
		copy(targets[b*T:], tokens[b*(T+1)+1:(b+1)*(T+1)])
	}
	var phases [4]time.Duration // forward, backward, clip, AdamW (--breakdown)
	var (
		step func() (float32, error)
		peak func() int64
		impl = "braid-cpu"
		mode = "fp32"
	)
	var adapter *model.LoRA
	if r := c.Int("lora-rank"); r > 0 {
		if adapter, err = model.NewLoRA(bm.cfg, model.LoRAConfig{Rank: r, Alpha: 2 * float64(r), Targets: model.DefaultLoRATargetsFor(bm.cfg)}); err != nil {
			return err
		}
		adapter.Init(0)
	}
	adam := cudamodel.AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01} // torch.optim.AdamW's defaults
	const lr = 1e-4
	if dev != nil {
		defer dev.Close()
		dm, err := cudamodel.New(dev, bm.cfg, B, T, prec)
		if err != nil {
			return err
		}
		defer dm.Close()
		if err := dm.WriteParams(host.Params); err != nil {
			return err
		}
		if adapter != nil {
			if err := dm.AttachLoRA(adapter); err != nil {
				return err
			}
		}
		n := 0
		breakdown := c.Bool("breakdown")
		mark := func(i int, t0 *time.Time) error {
			if !breakdown {
				return nil
			}
			err := dm.Sync()
			now := time.Now()
			phases[i] += now.Sub(*t0)
			*t0 = now
			return err
		}
		step = func() (float32, error) {
			n++
			t0 := time.Now()
			if err := dm.ZeroGrad(); err != nil {
				return 0, err
			}
			loss, err := dm.Forward(inputs, targets, B, T)
			if err != nil {
				return 0, err
			}
			if err := mark(0, &t0); err != nil {
				return 0, err
			}
			if err := dm.Backward(1); err != nil {
				return 0, err
			}
			if err := mark(1, &t0); err != nil {
				return 0, err
			}
			if _, err := dm.ClipGradNorm(1); err != nil {
				return 0, err
			}
			if err := mark(2, &t0); err != nil {
				return 0, err
			}
			if err := dm.AdamW(adam, lr, n); err != nil {
				return 0, err
			}
			return loss, mark(3, &t0)
		}
		peak = func() int64 { return dev.Allocated() }
		impl, mode = "braid-cuda", prec.String()
	} else {
		m, err := model.New(bm.cfg, B, T)
		if err != nil {
			return err
		}
		copy(m.Params, host.Params)
		opt := train.NewOptimizer(bm.cfg, adam.Beta1, adam.Beta2, adam.Eps, adam.WeightDecay)
		params, grads := m.Params, m.Grads
		if adapter != nil {
			if err := m.AttachLoRA(adapter); err != nil {
				return err
			}
			opt = train.NewLayoutOptimizer(adapter.Layout(), adam.Beta1, adam.Beta2, adam.Eps, adam.WeightDecay)
			params, grads = adapter.Params, adapter.Grads
		}
		step = func() (float32, error) {
			m.ZeroGrad()
			loss, err := m.Forward(inputs, targets, B, T)
			if err != nil {
				return 0, err
			}
			if err := m.Backward(1); err != nil {
				return 0, err
			}
			kernels.ClipGradNorm(grads, 1)
			opt.Apply(params, grads, lr)
			return loss, nil
		}
		peak = func() int64 { return model.MemoryBytes(bm.cfg, B, T, false) + 16*int64(bm.cfg.NumParams()) }
	}
	if adapter != nil {
		mode += fmt.Sprintf("+lora%d", adapter.Config.Rank)
	}
	t0 := time.Now()
	for i := 0; i < warm; i++ {
		if _, err := step(); err != nil {
			return err
		}
	}
	warmup := time.Since(t0)
	phases = [4]time.Duration{}
	t0 = time.Now()
	var loss float32
	for i := 0; i < steps; i++ {
		if loss, err = step(); err != nil {
			return err
		}
	}
	if dev != nil {
		unlock := dev.Lock()
		err := dev.Sync()
		unlock()
		if err != nil {
			return err
		}
	}
	el := time.Since(t0)
	if n := c.Int("profile"); n > 0 && dev != nil {
		unlock := dev.Lock()
		dev.StartProfile()
		unlock()
		for i := 0; i < n; i++ {
			if _, err := step(); err != nil {
				return err
			}
		}
		unlock = dev.Lock()
		lines, err := dev.StopProfile()
		unlock()
		if err != nil {
			return err
		}
		fmt.Fprintf(info, "# %s %s %s batch %d×%d: device time per kernel over %d steps\n%s", impl, c.String("model"), mode, B, T, n, cuda.FormatProfile(lines, n))
	}
	row := map[string]any{"impl": impl, "model": c.String("model"), "mode": mode, "batch": B, "seq": T,
		"tokens_per_s": round(float64(B*T*steps)/el.Seconds(), 0), "step_ms": round(1000*el.Seconds()/float64(steps), 2),
		"warmup_s": round(warmup.Seconds(), 1), "peak_gib": round(float64(peak())/(1<<30), 2), "loss": round(float64(loss), 3)}
	if dev != nil {
		row["device"] = dev.Info.Name
	}
	if c.Bool("breakdown") {
		for i, name := range []string{"forward_ms", "backward_ms", "clip_ms", "adamw_ms"} {
			row[name] = round(1000*phases[i].Seconds()/float64(steps), 2)
		}
	}
	if c.Bool("json") {
		b, _ := json.Marshal(row)
		fmt.Fprintln(c.App.Writer, string(b))
		return nil
	}
	fmt.Fprintf(c.App.Writer, "%s %s %s batch %d×%d: %.0f tokens/s, %.2f ms/step, %.2f GiB, loss %.3f (warm-up %.1f s)\n",
		impl, c.String("model"), mode, B, T, row["tokens_per_s"], row["step_ms"], row["peak_gib"], loss, warmup.Seconds())
	return nil
}
