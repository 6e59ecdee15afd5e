package train_test

import (
	"math"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/train"
)

// TestEvaluateScoresEveryTokenOnce: the loss does not depend on how windows
// are batched, every token up to the limit is scored once, and bits per byte
// follow from the loss for the byte tokenizer.
func TestEvaluateScoresEveryTokenOnce(t *testing.T) {
	cfg := model.Config{Vocab: 257, Context: 16, Dim: 16, Layers: 1, Heads: 2}
	tokens := make([]uint16, 203) // 202 predictable: 12 full windows of 16 and one of 10
	for i := range tokens {
		tokens[i] = uint16((i*7 + i/5) % 256)
	}
	var results []train.EvalResult
	for _, B := range []int{1, 3, 8} {
		m, err := model.New(cfg, B, 16)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(5)
		r, err := train.Evaluate(m, model.ByteTokenizer{}, tokens, B, 16, 0)
		if err != nil {
			t.Fatal(err)
		}
		if r.Tokens != 202 || r.Bytes != 202 {
			t.Errorf("B=%d: scored %d tokens, %d bytes; want 202 and 202", B, r.Tokens, r.Bytes)
		}
		if d := math.Abs(r.BitsPerByte - r.Loss/math.Ln2); d > 1e-9 {
			t.Errorf("B=%d: bits/byte %v, want loss/ln2 = %v", B, r.BitsPerByte, r.Loss/math.Ln2)
		}
		results = append(results, r)
	}
	for _, r := range results[1:] {
		if math.Abs(r.Loss-results[0].Loss) > 1e-6 {
			t.Errorf("loss %v with batching, %v without", r.Loss, results[0].Loss)
		}
	}
	// By hand: the mean over windows [16k, 16k+16) of the per-window loss.
	m, _ := model.New(cfg, 1, 16)
	m.Init(5)
	var nats float64
	for pos := 0; pos < 202; pos += 16 {
		T := min(16, 202-pos)
		x, y := make([]int32, T), make([]int32, T)
		for i := range x {
			x[i], y[i] = int32(tokens[pos+i]), int32(tokens[pos+i+1])
		}
		l, err := m.Forward(x, y, 1, T)
		if err != nil {
			t.Fatal(err)
		}
		nats += float64(l) * float64(T)
	}
	if want := nats / 202; math.Abs(results[0].Loss-want) > 1e-6 {
		t.Errorf("loss %v, by hand %v", results[0].Loss, want)
	}
	m8, _ := model.New(cfg, 2, 16)
	m8.Init(5)
	if r, _ := train.Evaluate(m8, model.ByteTokenizer{}, tokens, 2, 16, 50); r.Tokens != 50 {
		t.Errorf("max 50 tokens: scored %d", r.Tokens)
	}
	if _, err := train.Evaluate(m8, model.ByteTokenizer{}, tokens[:1], 2, 16, 0); err == nil {
		t.Error("one token: no error")
	}
}
