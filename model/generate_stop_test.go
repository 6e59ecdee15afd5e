package model_test

import (
	"testing"

	"github.com/braidml/braid/model"
)

// constModel is a LanguageModel whose most likely next token is always
// next.
type constModel struct{ next int }

func (constModel) Forward(tokens, targets []int32, B, T int) (float32, error) { return 0, nil }
func (m constModel) LogitsAt(dst []float32, b, t int) error {
	clear(dst)
	dst[m.next] = 10
	return nil
}
func (constModel) MaxBatch() (int, int) { return 1, 16 }

// TestGenerateStops: generation stops before a Stop id, as it does before
// end-of-text with StopAtEOT, and runs on without them.
func TestGenerateStops(t *testing.T) {
	tok := model.ByteTokenizer{}
	for _, tc := range []struct {
		next int
		opt  model.SampleOptions
		want int
	}{
		{'a', model.SampleOptions{MaxTokens: 5}, 5},
		{'a', model.SampleOptions{MaxTokens: 5, Stop: []int32{'b', 'a'}}, 0},
		{'a', model.SampleOptions{MaxTokens: 5, Stop: []int32{'b'}}, 5},
		{model.ByteEOT, model.SampleOptions{MaxTokens: 5, StopAtEOT: true, Stop: []int32{'b'}}, 0},
	} {
		ids, err := model.Generate(constModel{tc.next}, tok, []int32{'x'}, tc.opt)
		if err != nil || len(ids) != tc.want {
			t.Errorf("next %d, stop %v: %d tokens (%v), want %d", tc.next, tc.opt.Stop, len(ids), err, tc.want)
		}
	}
}
