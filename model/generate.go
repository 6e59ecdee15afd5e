package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// SampleOptions control Generate.
type SampleOptions struct {
	MaxTokens   int     // tokens to generate
	Temperature float64 // 0 picks the most likely token (greedy)
	TopK        int     // sample among the K most likely tokens; 0 means all
	Seed        uint64  // seeds the sampler: same seed, same text
	StopAtEOT   bool    // stop when the model emits end-of-text
}

// Generate continues prompt with up to opt.MaxTokens tokens sampled from m
// and returns the generated token ids (prompt excluded). The model needs
// activations for one sequence (New(c, 1, T)); when the text outgrows T, the
// model sees the last T tokens. An empty prompt starts from end-of-text.
func Generate(m *Model, tok Tokenizer, prompt []int32, opt SampleOptions) ([]int32, error) {
	if opt.Temperature < 0 || math.IsNaN(opt.Temperature) {
		return nil, fmt.Errorf("model: temperature %g, want ≥ 0", opt.Temperature)
	}
	if opt.TopK < 0 {
		return nil, fmt.Errorf("model: top-k %d, want ≥ 0", opt.TopK)
	}
	_, maxT := m.MaxBatch()
	ctx := append([]int32{}, prompt...)
	if len(ctx) == 0 {
		ctx = append(ctx, tok.EOT())
	}
	rng := rand.New(rand.NewPCG(opt.Seed, 0x67656e))
	V := m.Config.Vocab
	probs := make([]float64, V)
	idx := make([]int, V)
	var out []int32
	for len(out) < opt.MaxTokens {
		window := ctx
		if len(window) > maxT {
			window = window[len(window)-maxT:]
		}
		T := len(window)
		if _, err := m.Forward(window, nil, 1, T); err != nil {
			return nil, err
		}
		logits := m.Logits()[(T-1)*V : T*V]
		next := pick(logits[:tok.Vocab()], probs[:tok.Vocab()], idx[:tok.Vocab()], opt, rng)
		if next == tok.EOT() && opt.StopAtEOT {
			break
		}
		out = append(out, next)
		ctx = append(ctx, next)
	}
	return out, nil
}

// pick chooses a token from logits by greedy, top-k or full sampling.
func pick(logits []float32, probs []float64, idx []int, opt SampleOptions, rng *rand.Rand) int32 {
	best := 0
	for i, l := range logits {
		if l > logits[best] {
			best = i
		}
	}
	if opt.Temperature == 0 {
		return int32(best)
	}
	for i := range idx {
		idx[i] = i
	}
	cands := idx
	if opt.TopK > 0 && opt.TopK < len(logits) {
		sort.Slice(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
		cands = idx[:opt.TopK]
	}
	maxl := float64(logits[best])
	var sum float64
	for _, i := range cands {
		p := math.Exp((float64(logits[i]) - maxl) / opt.Temperature)
		probs[i] = p
		sum += p
	}
	r := rng.Float64() * sum
	for _, i := range cands {
		r -= probs[i]
		if r <= 0 {
			return int32(i)
		}
	}
	return int32(cands[len(cands)-1])
}
