package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/transport/quic"
	"github.com/braidml/braid/transport/transportbench"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure kernels, links and collectives",
		Subcommands: []*cli.Command{benchTrainCommand(), benchGenerateCommand(), {
			Name:  "kernels",
			Usage: "sgemm GFLOPS and training tokens/s on this machine",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "sizes", Value: "256,512,1024,2048", Usage: "sgemm sizes n (n×n·n×n)"},
				&cli.StringFlag{Name: "threads", Usage: "comma-separated thread counts (default: 1 and all cores)"},
				&cli.StringFlag{Name: "configs", Value: "tiny,small", Usage: "model presets to time a training step of"},
				&cli.IntFlag{Name: "batch", Value: 8, Usage: "sequences per training step"},
				&cli.StringFlag{Name: "kernel", Value: "auto", Usage: "matmul micro-kernel: auto, avx512, avx2 or generic"},
				&cli.DurationFlag{Name: "min-time", Value: 2 * time.Second, Usage: "minimum time per measurement"},
				&cli.BoolFlag{Name: "json", Usage: "one JSON object per line"},
			},
			Action: runBenchKernels,
		}, {
			Name:  "transport",
			Usage: "point-to-point QUIC throughput (mutual TLS) on loopback with 1 and more connections",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "transport", Value: strings.Join(transportbench.Kinds, ","), Usage: "comma-separated transports to measure: quic (control, gossip-adjacent and small messages), tls-tcp (the ring's bulk lane)"},
				&cli.StringFlag{Name: "lanes", Value: "1,4", Usage: "comma-separated connection counts"},
				&cli.Int64Flag{Name: "bytes", Value: 512 << 20, Usage: "bytes per measurement"},
				&cli.IntFlag{Name: "repeat", Value: 3, Usage: "measurements per lane count (median reported)"},
				&cli.IntFlag{Name: "links", Usage: "instead: this many simultaneous point-to-point transfers (1 connection each), per-link average"},
				&cli.BoolFlag{Name: "json", Usage: "one JSON object per line"},
			},
			Action: runBenchTransport,
		}, benchAllreduceCommand()},
	}
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func runBenchKernels(c *cli.Context) error {
	if err := setCompute(0, c.String("kernel")); err != nil {
		return err
	}
	sizes, err := parseInts(c.String("sizes"))
	if err != nil {
		return fmt.Errorf("--sizes: %w", err)
	}
	all := kernels.Threads()
	threads := []int{1, all}
	if all == 1 {
		threads = []int{1}
	}
	if s := c.String("threads"); s != "" {
		if threads, err = parseInts(s); err != nil {
			return fmt.Errorf("--threads: %w", err)
		}
	}
	out, asJSON, minDur := c.App.Writer, c.Bool("json"), c.Duration("min-time")
	emit := func(obj map[string]any, text string) {
		if asJSON {
			b, _ := json.Marshal(obj)
			fmt.Fprintln(out, string(b))
		} else {
			fmt.Fprintln(out, text)
		}
	}
	if !asJSON {
		fmt.Fprintf(out, "# braid bench kernels: %s micro-kernel, GOMAXPROCS %d, %s/%s\n", kernels.ActiveImpl(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	}
	for _, th := range threads {
		kernels.SetThreads(th)
		for _, n := range sizes {
			g := kernels.BenchGemm(n, minDur)
			emit(map[string]any{"kind": "sgemm", "n": n, "threads": kernels.Threads(), "impl": kernels.ActiveImpl().String(), "gflops": round(g, 1)},
				fmt.Sprintf("sgemm    n=%-5d threads=%d  %8.1f GFLOPS", n, kernels.Threads(), g))
		}
	}
	for _, name := range strings.Split(c.String("configs"), ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		// vocab 256 matches the PyTorch peer (shared/bench/torch_gpt.py).
		mc, err := model.Preset(name, 256)
		if err != nil {
			return err
		}
		for _, th := range threads {
			kernels.SetThreads(th)
			tps, stepMS, err := benchTrainStep(mc, c.Int("batch"), minDur)
			if err != nil {
				return err
			}
			emit(map[string]any{"kind": "train", "config": name, "threads": kernels.Threads(), "batch": c.Int("batch"),
				"params": mc.NumParams(), "step_ms": round(stepMS, 2), "tokens_per_s": round(tps, 0)},
				fmt.Sprintf("train    %-6s threads=%d  batch %d×%d  %.2f M params  %7.1f ms/step  %8.0f tokens/s",
					name, kernels.Threads(), c.Int("batch"), mc.Context, float64(mc.NumParams())/1e6, stepMS, tps))
		}
	}
	kernels.SetThreads(0)
	return nil
}

// benchTrainStep times forward + backward + AdamW on random tokens, as the
// PyTorch peer does, and returns the median tokens/s and step time.
func benchTrainStep(mc model.Config, B int, minDur time.Duration) (tps, stepMS float64, err error) {
	T := mc.Context
	m, err := model.New(mc, B, T)
	if err != nil {
		return 0, 0, err
	}
	m.Init(1)
	rng := rand.New(rand.NewPCG(1, 2))
	x, y := make([]int32, B*T), make([]int32, B*T)
	for i := range x {
		x[i], y[i] = int32(rng.IntN(mc.Vocab)), int32(rng.IntN(mc.Vocab))
	}
	mo, vo := make([]float32, len(m.Params)), make([]float32, len(m.Params))
	step := func(i int) error {
		m.ZeroGrad()
		if _, err := m.Forward(x, y, B, T); err != nil {
			return err
		}
		if err := m.Backward(1); err != nil {
			return err
		}
		kernels.AdamW(m.Params, m.Grads, mo, vo, kernels.AdamWParams{LR: 3e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Step: i})
		return nil
	}
	for i := 1; i <= 2; i++ { // warm-up, as the peer does
		if err := step(i); err != nil {
			return 0, 0, err
		}
	}
	var times []float64
	start := time.Now()
	for i := 3; len(times) < 5 || time.Since(start) < minDur; i++ {
		t0 := time.Now()
		if err := step(i); err != nil {
			return 0, 0, err
		}
		times = append(times, time.Since(t0).Seconds())
	}
	sort.Float64s(times)
	med := times[len(times)/2]
	return float64(B*T) / med, med * 1e3, nil
}

func round(x float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(x*p+0.5)) / p
}

func runBenchTransport(c *cli.Context) error {
	lanes, err := parseInts(c.String("lanes"))
	if err != nil {
		return fmt.Errorf("--lanes: %w", err)
	}
	if c.Int64("bytes") < 1<<20 || c.Int("repeat") < 1 {
		return fmt.Errorf("--bytes must be at least 1 MiB and --repeat at least 1")
	}
	kinds := strings.Split(c.String("transport"), ",")
	for _, k := range kinds {
		if !slices.Contains(transportbench.Kinds, k) {
			return fmt.Errorf("--transport %q: want one or more of %s", k, strings.Join(transportbench.Kinds, ","))
		}
	}
	out := c.App.Writer
	if links := c.Int("links"); links > 0 {
		for _, k := range kinds {
			if err := benchLinks(c, k, links); err != nil {
				return err
			}
		}
		return nil
	}
	if !c.Bool("json") {
		fmt.Fprintf(out, "# braid bench transport: quic (quic-go) and tls-tcp (TLS over TCP), both TLS 1.3 with mutual auth, on loopback, %d MiB per run, median of %d\n", c.Int64("bytes")>>20, c.Int("repeat"))
		if gso, why := quic.SegmentationOffload(); gso {
			fmt.Fprintln(out, "# quic: UDP segmentation offload (GSO) available")
		} else {
			fmt.Fprintf(out, "# quic: no UDP segmentation offload (GSO): %s\n", why)
		}
	}
	for _, k := range kinds {
		for _, l := range lanes {
			var runs []float64
			for range c.Int("repeat") {
				g, err := transportbench.Throughput(c.Context, k, l, c.Int64("bytes"))
				if err != nil {
					return err
				}
				runs = append(runs, g)
			}
			sort.Float64s(runs)
			g := runs[len(runs)/2]
			if c.Bool("json") {
				b, _ := json.Marshal(map[string]any{"kind": "transport", "proto": k, "lanes": l, "bytes": c.Int64("bytes"), "gbit_per_s": round(g, 3)})
				fmt.Fprintln(out, string(b))
			} else {
				fmt.Fprintf(out, "%-8s lanes=%-3d %8.3f Gbit/s\n", k, l, g)
			}
		}
	}
	return nil
}

// benchLinks runs links point-to-point transfers on transport kind at once (each its own
// pair of endpoints) and reports the per-link average: the ceiling of the
// transport when a ring's N links are all busy on one machine.
func benchLinks(c *cli.Context, kind string, links int) error {
	bytes := c.Int64("bytes")
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sum  float64
		errs []error
	)
	for range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := transportbench.Throughput(c.Context, kind, 1, bytes)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			sum += g
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	gbps := sum / float64(links) / 8 // Gbit/s → GB/s per link
	if c.Bool("json") {
		b, _ := json.Marshal(map[string]any{"proto": kind, "links": links, "bytes": bytes, "GBps": round(gbps, 4)})
		fmt.Fprintln(c.App.Writer, string(b))
		return nil
	}
	fmt.Fprintf(c.App.Writer, "%-8s %d simultaneous links  %.4f GB/s per link\n", kind, links, gbps)
	return nil
}
