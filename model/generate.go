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
	// TopP samples among the most likely tokens whose probabilities
	// (after temperature and TopK) add up to at least TopP (nucleus
	// sampling); 0 or 1 means all.
	TopP      float64
	Seed      uint64 // seeds the sampler: same seed, same text
	StopAtEOT bool   // stop when the model emits end-of-text
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
// On the CPU (*Model) it computes the prompt once and then one token a step
// with a KV cache (its activations are not used); other models recompute
// the whole window for every token. Both sample the same tokens for the
// same options, within float32 rounding of the logits.
func Generate(m LanguageModel, tok Tokenizer, prompt []int32, opt SampleOptions) ([]int32, error) {
	if err := opt.Check(); err != nil {
		return nil, err
	}
	_, maxT := m.MaxBatch()
	ctx := append([]int32{}, prompt...)
	if len(ctx) == 0 {
		ctx = append(ctx, tok.EOT())
	}
	if cm, ok := m.(*Model); ok {
		return generateCached(cm, tok, ctx, maxT, opt)
	}
	s := NewSampler(tok.Vocab(), opt)
	logits := make([]float32, tok.Vocab())
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
		next := s.Pick(logits)
		if next == tok.EOT() && opt.StopAtEOT || slices.Contains(opt.Stop, next) {
			break
		}
		out = append(out, next)
		ctx = append(ctx, next)
	}
	return out, nil
}

// generateCached is Generate on the CPU with a KV cache: the prompt is
// computed once, then one token a step. While the text fits maxT tokens
// this gives Forward's logits (within float32 rounding); past maxT, where
// Generate shows the model the last maxT tokens at positions 0..maxT−1,
// the cache is refilled with that window each step, as the full
// recomputation would.
func generateCached(m *Model, tok Tokenizer, ctx []int32, maxT int, opt SampleOptions) ([]int32, error) {
	kv, err := m.NewKVCache(1, maxT, min(maxT, prefillRows))
	if err != nil {
		return nil, err
	}
	if tok.Vocab() > m.Config.Vocab {
		return nil, fmt.Errorf("model: a tokenizer of %d ids for a model of %d", tok.Vocab(), m.Config.Vocab)
	}
	s := NewSampler(tok.Vocab(), opt)
	logits := make([]float32, m.Config.Vocab) // the model's; the tokenizer's ids are its first
	pending := ctx                            // tokens not in the cache yet
	var out []int32
	for len(out) < opt.MaxTokens {
		if kv.Len(0)+len(pending) > maxT {
			kv.Reset(0)
			pending = ctx[len(ctx)-maxT:]
		}
		if err := Prefill(kv, 0, pending, logits); err != nil {
			return nil, err
		}
		next := s.Pick(logits[:tok.Vocab()])
		if next == tok.EOT() && opt.StopAtEOT || slices.Contains(opt.Stop, next) {
			break
		}
		out = append(out, next)
		ctx = append(ctx, next)
		pending = ctx[len(ctx)-1:]
	}
	return out, nil
}

// prefillRows is how many tokens of a prompt a KV cache step takes at most
// in Generate: enough for the matrix multiplies to run at full speed,
// few enough to keep the attention scratch small.
const prefillRows = 256

// Prefill appends tokens to slot of kv in steps of up to kv.MaxRows tokens
// and writes the logits after the last one into logits (Vocab floats).
func Prefill(kv *KVCache, slot int, tokens []int32, logits []float32) error {
	if len(tokens) == 0 {
		return fmt.Errorf("model: Prefill with no tokens")
	}
	for len(tokens) > 0 {
		n := min(len(tokens), kv.MaxRows())
		var dst [][]float32
		if n == len(tokens) {
			dst = [][]float32{logits}
		}
		if err := kv.Step([]KVChunk{{Slot: slot, Tokens: tokens[:n]}}, dst); err != nil {
			return err
		}
		tokens = tokens[n:]
	}
	return nil
}

// Check reports options Generate and a Sampler cannot follow.
func (opt SampleOptions) Check() error {
	if opt.Temperature < 0 || math.IsNaN(opt.Temperature) {
		return fmt.Errorf("model: temperature %g, want ≥ 0", opt.Temperature)
	}
	if opt.TopK < 0 {
		return fmt.Errorf("model: top-k %d, want ≥ 0", opt.TopK)
	}
	if !(opt.TopP >= 0 && opt.TopP <= 1) {
		return fmt.Errorf("model: top-p %g, want 0..1", opt.TopP)
	}
	return nil
}

// A Sampler picks tokens from logits as SampleOptions say (Temperature,
// TopK, TopP, Seed), with its own random stream: the same options and
// logits give the same tokens. Not safe for concurrent use.
type Sampler struct {
	opt   SampleOptions
	rng   *rand.Rand
	probs []float64
	idx   []int
}

// NewSampler returns a sampler over a vocabulary of V tokens. Options that
// Check refuses are the caller's to reject first (Generate does).
func NewSampler(V int, opt SampleOptions) *Sampler {
	return &Sampler{opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, 0x67656e)),
		probs: make([]float64, V), idx: make([]int, V)}
}

// Pick chooses a token from logits (V floats) by greedy, top-k, top-p or
// full sampling.
func (s *Sampler) Pick(logits []float32) int32 {
	return pick(logits, s.probs, s.idx, s.opt, s.rng)
}

// pick chooses a token from logits by greedy, top-k, top-p or full
// sampling.
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
	nucleus := opt.TopP > 0 && opt.TopP < 1
	if opt.TopK > 0 && opt.TopK < len(logits) || nucleus {
		sort.Slice(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	}
	if opt.TopK > 0 && opt.TopK < len(logits) {
		cands = idx[:opt.TopK]
	}
	maxl := float64(logits[best])
	var sum float64
	for _, i := range cands {
		p := math.Exp((float64(logits[i]) - maxl) / opt.Temperature)
		probs[i] = p
		sum += p
	}
	if nucleus {
		// Keep the most likely candidates (cands is sorted) up to the
		// first whose cumulative probability reaches TopP.
		var cum float64
		for k, i := range cands {
			cum += probs[i]
			if cum >= opt.TopP*sum {
				cands = cands[:k+1]
				break
			}
		}
		sum = 0
		for _, i := range cands {
			sum += probs[i]
		}
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
