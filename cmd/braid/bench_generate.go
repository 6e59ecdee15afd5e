package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/model"
)

func benchGenerateCommand() *cli.Command {
	return &cli.Command{
		Name:  "generate",
		Usage: "tokens/s of greedy generation on the CPU, with the KV cache and without (full recomputation each token)",
		Description: "Generates --tokens tokens after a random prompt of --prompt tokens, greedily, from --model:\n" +
			"gpt2-124m or small (the bundled base's shape), randomly initialised, or a checkpoint DIR; once with\n" +
			"the KV cache (as braid generate and braid serve run) and once recomputing the whole window each\n" +
			"token, in the same run. scripts/bench_generate.py times PyTorch on the same shapes.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Value: "small", Usage: "gpt2-124m, small, or a checkpoint `DIR`"},
			&cli.IntFlag{Name: "prompt", Value: 64, Usage: "prompt tokens"},
			&cli.IntFlag{Name: "tokens", Value: 128, Usage: "tokens to generate"},
			&cli.IntFlag{Name: "threads", Usage: "compute threads (default: all cores)"},
			&cli.BoolFlag{Name: "no-recompute", Usage: "time the KV cache only"},
			&cli.BoolFlag{Name: "json", Usage: "one JSON object"},
		},
		Action: runBenchGenerate,
	}
}

// fullRecompute hides *model.Model from model.Generate, which then runs
// Forward over the whole window for every token, as it does for a model
// without a KV cache.
type fullRecompute struct{ *model.Model }

func runBenchGenerate(c *cli.Context) error {
	if err := setCompute(c.Int("threads"), "auto"); err != nil {
		return err
	}
	P, N := c.Int("prompt"), c.Int("tokens")
	var cfg model.Config
	var params []float32
	name := c.String("model")
	if bm, ok := benchModels[name]; ok {
		cfg = bm.cfg
	} else {
		ck, err := model.LoadCheckpoint(name)
		if err != nil {
			return fmt.Errorf("--model: %w (or gpt2-124m, small)", err)
		}
		cfg, params = ck.Config, ck.Params
	}
	if P < 1 || N < 1 || P+N > cfg.Context {
		return fmt.Errorf("--prompt %d and --tokens %d: want ≥ 1 each and %d in all at most", P, N, cfg.Context)
	}
	m, err := model.NewInference(cfg, 1, P+N)
	if err != nil {
		return err
	}
	if params != nil {
		copy(m.Params, params)
	} else {
		m.Init(1)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	prompt := make([]int32, P)
	for i := range prompt {
		prompt[i] = int32(rng.IntN(cfg.Vocab))
	}
	tok := vocabOnly(cfg.Vocab)
	opt := model.SampleOptions{MaxTokens: N}
	timeIt := func(lm model.LanguageModel) (float64, []int32, error) {
		start := time.Now()
		ids, err := model.Generate(lm, tok, prompt, opt)
		return float64(len(ids)) / time.Since(start).Seconds(), ids, err
	}
	cached, ids, err := timeIt(m)
	if err != nil {
		return err
	}
	res := map[string]any{"model": name, "prompt": P, "tokens": N, "threads": c.Int("threads"), "kv_tok_s": cached}
	if !c.Bool("no-recompute") {
		full, fullIDs, err := timeIt(fullRecompute{m})
		if err != nil {
			return err
		}
		same := len(ids) == len(fullIDs)
		for i := range ids {
			same = same && ids[i] == fullIDs[i]
		}
		res["recompute_tok_s"], res["speedup"], res["same_tokens"] = full, cached/full, same
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(res)
	}
	fmt.Fprintf(c.App.Writer, "%s: %d prompt + %d generated tokens, greedy: KV cache %.1f tok/s", name, P, N, cached)
	if full, ok := res["recompute_tok_s"].(float64); ok {
		fmt.Fprintf(c.App.Writer, ", full recomputation %.1f tok/s (%.1f× faster; same tokens: %v)", full, cached/full, res["same_tokens"])
	}
	fmt.Fprintln(c.App.Writer)
	return nil
}

// vocabOnly is a tokenizer of V ids that never encodes or decodes: what
// Generate needs to time a model on random ids. End-of-text is out of
// range, so generation never stops early.
type vocabOnly int

func (v vocabOnly) Name() string                         { return "bench" }
func (v vocabOnly) Vocab() int                           { return int(v) }
func (v vocabOnly) EOT() int32                           { return -1 }
func (v vocabOnly) Encode(dst []int32, _ []byte) []int32 { return dst }
func (v vocabOnly) Decode(dst []byte, _ []int32) []byte  { return dst }
