package model_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/braidml/braid/model"
)

// kvFixtures are the checkpoints the KV cache is checked on: one of each
// family member, and an adapter on each family.
var kvFixtures = []struct {
	dir, adapter string
	bf16         bool // hold the base in bf16 (NewFrozenBF16)
}{
	{"testdata/hf_tiny", "", false},
	{"testdata/hf_tiny", "testdata/lora_tiny", false},
	{"testdata/llama_tiny", "", false},
	{"testdata/llama_tiny", "testdata/llama_lora_tiny", false},
	{"testdata/llama_tiny", "testdata/llama_lora_tiny", true},
	{"testdata/mistral_tiny", "", false}, // sliding window 5: the sequences below outgrow it
	{"testdata/qwen2_tiny", "", true},
}

// loadKV loads fixture dir (with its adapter, if any; with its base held
// in bf16 if bf16) for a batch of one sequence of up to T tokens.
func loadKV(t *testing.T, dir, adapter string, bf16 bool, T int) *model.Model {
	t.Helper()
	m, _, err := model.Load(dir, 1, T)
	if err != nil {
		t.Fatal(err)
	}
	if bf16 {
		held, err := model.NewFrozenBF16(m.Config, 1, T)
		if err != nil {
			t.Fatal(err)
		}
		held.SetBaseWeights(m.Params)
		m = held
	}
	if adapter != "" {
		a, err := model.LoadAdapter(adapter, m.Config)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.AttachLoRA(a); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// TestKVCacheMatchesForward: the logits of incremental decoding — a prompt
// chunk, then one token a step, two sequences sharing each step — equal
// Forward's over the whole sequence at every position, within 1e-4, for
// every family member.
func TestKVCacheMatchesForward(t *testing.T) {
	const T, prompt = 12, 5
	for _, fx := range kvFixtures {
		t.Run(fmt.Sprintf("%s+%s/bf16=%v", fx.dir, fx.adapter, fx.bf16), func(t *testing.T) {
			m := loadKV(t, fx.dir, fx.adapter, fx.bf16, T)
			V := m.Config.Vocab
			rng := rand.New(rand.NewPCG(7, 1))
			seqs := make([][]int32, 2)
			want := make([][]float32, 2) // (T, V) per sequence
			for s := range seqs {
				for range T {
					seqs[s] = append(seqs[s], int32(rng.IntN(V)))
				}
				if _, err := m.Forward(seqs[s], nil, 1, T); err != nil {
					t.Fatal(err)
				}
				want[s] = slices.Clone(m.Logits())
			}
			kv, err := m.NewKVCache(2, T, 16)
			if err != nil {
				t.Fatal(err)
			}
			got := [][]float32{make([]float32, V), make([]float32, V)}
			// Slot 0 prefills its prompt while slot 1 takes its first token
			// alone; then slot 1 catches up by a chunk; then one token each.
			steps := [][]model.KVChunk{
				{{Slot: 0, Tokens: seqs[0][:prompt]}, {Slot: 1, Tokens: seqs[1][:1]}},
				{{Slot: 1, Tokens: seqs[1][1:prompt]}},
			}
			for i := prompt; i < T; i++ {
				steps = append(steps, []model.KVChunk{{Slot: 1, Tokens: seqs[1][i : i+1]}, {Slot: 0, Tokens: seqs[0][i : i+1]}})
			}
			worst := 0.0
			for _, step := range steps {
				dst := make([][]float32, len(step))
				for i, ch := range step {
					dst[i] = got[ch.Slot]
				}
				if err := kv.Step(step, dst); err != nil {
					t.Fatal(err)
				}
				for _, ch := range step {
					pos := kv.Len(ch.Slot) - 1
					w := want[ch.Slot][pos*V : (pos+1)*V]
					for j := range w {
						d := math.Abs(float64(got[ch.Slot][j] - w[j]))
						if !(d <= 1e-4) {
							t.Fatalf("slot %d position %d logit %d: cached %g, full %g", ch.Slot, pos, j, got[ch.Slot][j], w[j])
						}
						worst = max(worst, d)
					}
				}
			}
			if kv.Len(0) != T || kv.Len(1) != T {
				t.Fatalf("lengths %d, %d after the steps, want %d", kv.Len(0), kv.Len(1), T)
			}
			t.Logf("largest logit difference %.2g", worst)
		})
	}
}

// TestKVCacheRefusesBadSteps: Step refuses, before it changes anything, a
// slot out of range or twice in a step, an empty chunk, a chunk past the
// slot's capacity, too many rows, and tokens outside the vocabulary.
func TestKVCacheRefusesBadSteps(t *testing.T) {
	m := loadKV(t, "testdata/llama_tiny", "", false, 8)
	kv, err := m.NewKVCache(2, 8, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Step([]model.KVChunk{{Slot: 0, Tokens: []int32{1, 2, 3}}}, nil); err != nil {
		t.Fatal(err)
	}
	for name, chunks := range map[string][]model.KVChunk{
		"slot out of range": {{Slot: 2, Tokens: []int32{1}}},
		"negative slot":     {{Slot: -1, Tokens: []int32{1}}},
		"slot twice":        {{Slot: 1, Tokens: []int32{1}}, {Slot: 1, Tokens: []int32{2}}},
		"empty chunk":       {{Slot: 1}},
		"past capacity":     {{Slot: 0, Tokens: []int32{1, 2, 3, 4}}, {Slot: 1, Tokens: []int32{1}}},
		"too many rows":     {{Slot: 1, Tokens: []int32{1, 2, 3, 4, 5}}},
		"token too large":   {{Slot: 1, Tokens: []int32{int32(m.Config.Vocab)}}},
		"negative token":    {{Slot: 1, Tokens: []int32{-1}}},
	} {
		if kv.Len(0) == 3 && name == "past capacity" {
			// slot 0 holds 3 of 8: 4 more fit, so make it 6.
			chunks[0].Tokens = []int32{1, 2, 3, 4, 5, 6}
		}
		if err := kv.Step(chunks, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
		if kv.Len(0) != 3 || kv.Len(1) != 0 {
			t.Fatalf("%s: lengths changed to %d, %d", name, kv.Len(0), kv.Len(1))
		}
	}
	if _, err := m.NewKVCache(1, m.Config.Context+1, 1); err == nil {
		t.Error("a cache longer than the context: no error")
	}
}

// hideModel hides *model.Model from Generate, which then recomputes the
// whole window each token as it does for other LanguageModels.
type hideModel struct{ *model.Model }

func (h hideModel) Forward(tokens, targets []int32, B, T int) (float32, error) {
	return h.Model.Forward(tokens, targets, B, T)
}

// TestGenerateCachedSameText: Generate with the KV cache samples the same
// tokens as with full recomputation for the same seed — greedy, top-k,
// top-p, and on past the model's window, where the cache is refilled.
func TestGenerateCachedSameText(t *testing.T) {
	const maxT = 10
	for _, dir := range []string{"testdata/hf_tiny", "testdata/mistral_tiny"} {
		m := loadKV(t, dir, "", false, maxT)
		tok := smallTok{m.Config.Vocab}
		prompt := []int32{3, 1, 4, 1, 5}
		for _, opt := range []model.SampleOptions{
			{MaxTokens: 20},
			{MaxTokens: 20, Temperature: 1, Seed: 3},
			{MaxTokens: 20, Temperature: 0.8, TopK: 10, Seed: 4},
			{MaxTokens: 20, Temperature: 1.2, TopP: 0.9, Seed: 5},
		} {
			cached, err := model.Generate(m, tok, prompt, opt)
			if err != nil {
				t.Fatal(err)
			}
			full, err := model.Generate(hideModel{m}, tok, prompt, opt)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cached, full) || len(cached) != opt.MaxTokens {
				t.Errorf("%s %+v: cached %v, full %v", dir, opt, cached, full)
			}
		}
	}
}

// smallTok is a tokenizer of the fixtures' small vocabularies, its last id
// end-of-text.
type smallTok struct{ v int }

func (smallTok) Name() string                         { return "small" }
func (s smallTok) Vocab() int                         { return s.v }
func (s smallTok) EOT() int32                         { return int32(s.v - 1) }
func (smallTok) Encode(dst []int32, _ []byte) []int32 { return dst }
func (smallTok) Decode(dst []byte, _ []int32) []byte  { return dst }

// TestSamplerTopP: a small top-p keeps only the most likely token, top-p 1
// samples as none, and top-p outside 0..1 is refused.
func TestSamplerTopP(t *testing.T) {
	logits := []float32{1, 3, 2.9, 0, -1}
	small := model.NewSampler(len(logits), model.SampleOptions{Temperature: 1, TopP: 0.05, Seed: 1})
	all := model.NewSampler(len(logits), model.SampleOptions{Temperature: 1, TopP: 1, Seed: 1})
	none := model.NewSampler(len(logits), model.SampleOptions{Temperature: 1, Seed: 1})
	seen := map[int32]bool{}
	for range 200 {
		if got := small.Pick(logits); got != 1 {
			t.Fatalf("top-p 0.05 picked %d, want 1 (the most likely)", got)
		}
		a, n := all.Pick(logits), none.Pick(logits)
		if a != n {
			t.Fatalf("top-p 1 picked %d, no top-p %d", a, n)
		}
		seen[a] = true
	}
	if len(seen) < 3 {
		t.Errorf("top-p 1 sampled only %v", seen)
	}
	for _, p := range []float64{-0.1, 1.5, math.NaN()} {
		if _, err := model.Generate(constModel{1}, model.ByteTokenizer{}, nil, model.SampleOptions{MaxTokens: 1, TopP: p}); err == nil {
			t.Errorf("top-p %g: no error", p)
		}
	}
}

// BenchmarkKVCacheDecode times one decoded token of the bundled base
// model's shape, at positions 64..255 (refilled with a 64-token prompt
// when the cache is full).
func BenchmarkKVCacheDecode(b *testing.B) {
	c := model.Config{Vocab: 257, Context: 256, Dim: 192, Layers: 6, Heads: 6}
	m, err := model.NewInference(c, 1, 1)
	if err != nil {
		b.Fatal(err)
	}
	m.Init(1)
	kv, err := m.NewKVCache(1, 256, 64)
	if err != nil {
		b.Fatal(err)
	}
	prompt := make([]int32, 64)
	logits := make([]float32, c.Vocab)
	for b.Loop() {
		if kv.Len(0) == 0 || kv.Len(0) == kv.MaxLen() {
			kv.Reset(0)
			if err := model.Prefill(kv, 0, prompt, logits); err != nil {
				b.Fatal(err)
			}
		}
		if err := kv.Step([]model.KVChunk{{Slot: 0, Tokens: prompt[:1]}}, [][]float32{logits}); err != nil {
			b.Fatal(err)
		}
	}
}
