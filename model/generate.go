package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
)

// SampleOptions control Generate.
type SampleOptions struct {
	MaxTokens   int     // tokens to generate
	Temperature float64 // 0 picks the most likely token (greedy)
	TopK        int     // sample among the K most likely tokens; 0 means all
	Seed        uint64  // seeds the sampler: same seed, same text
	StopAtEOT   bool    // stop when the model emits end-of-text
	// Stop lists more ids to stop at (a chat template's end-of-turn
	// token); like end-of-text, a stop id is not returned.
	Stop []int32
}

// A LanguageModel is what Generate needs: *Model on the CPU, or a model on
// a GPU (package cudamodel).
type LanguageModel interface {
	// Forward runs the model on tokens (B, T); targets may be nil.
	Forward(tokens, targets []int32, B, T int) (float32, error)
	// LogitsAt copies the first len(dst) logits of sequence b, position t of
	// the last Forward into dst.
	LogitsAt(dst []float32, b, t int) error
	// MaxBatch is the largest batch the model holds.
	MaxBatch() (B, T int)
}

// LogitsAt copies the first len(dst) logits of sequence b, position t of
// the last Forward call into dst.
func (m *Model) LogitsAt(dst []float32, b, t int) error {
	V := m.Config.Vocab
	if len(dst) > V || b < 0 || b >= m.B || t < 0 || t >= m.T {
		return fmt.Errorf("model: LogitsAt(%d floats, %d, %d) of a %d×%d batch with vocabulary %d", len(dst), b, t, m.B, m.T, V)
	}
	i := (b*m.T + t) * V
	copy(dst, m.act.logits[i:i+len(dst)])
	return nil
}

// Generate continues prompt with up to opt.MaxTokens tokens sampled from m
// and returns the generated token ids (prompt excluded). The model needs
// activations for one sequence (New(c, 1, T)); when the text outgrows T, the
// model sees the last T tokens. An empty prompt starts from end-of-text.
func Generate(m LanguageModel, tok Tokenizer, prompt []int32, opt SampleOptions) ([]int32, error) {
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
	V := tok.Vocab()
	probs := make([]float64, V)
	idx := make([]int, V)
	logits := make([]float32, V)
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
		if err := m.LogitsAt(logits, 0, T-1); err != nil {
			return nil, err
		}
		next := pick(logits, probs, idx, opt, rng)
		if next == tok.EOT() && opt.StopAtEOT || slices.Contains(opt.Stop, next) {
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
