package model_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/braidml/braid/model"
)

// gradReadyBatch returns a seeded model of config c and a 2×12 batch for it.
func gradReadyBatch(t *testing.T, c model.Config) (m *model.Model, x, y []int32) {
	t.Helper()
	m, err := model.New(c, 2, 12)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(7)
	rng := rand.New(rand.NewPCG(7, 1))
	x, y = make([]int32, 24), make([]int32, 24)
	for i := range x {
		x[i], y[i] = int32(rng.IntN(c.Vocab)), int32(rng.IntN(c.Vocab))
	}
	return m, x, y
}

// TestGradReady: the ranges Backward reports are GradRanges, in order (ln_f,
// then the blocks last layer first, then the embeddings), disjoint, covering
// Grads; each range's values are final when it is reported (nothing changes
// them later in the same Backward); and the hook changes no result.
func TestGradReady(t *testing.T) {
	c := tinyRef // L=2
	m, x, y := gradReadyBatch(t, c)
	ps := c.Layout()
	want := [][2]int{
		{ps[len(ps)-2].Offset, c.NumParams()}, // ln_f
		{ps[2+12].Offset, ps[2+12*2].Offset},  // h.1
		{ps[2].Offset, ps[2+12].Offset},       // h.0
		{0, ps[2].Offset},                     // wte, wpe
	}
	if got := m.GradRanges(); !slices.Equal(got, want) {
		t.Fatalf("GradRanges %v, want %v", got, want)
	}

	// Two micro-batches without the hook: the reference gradient.
	backward := func(hook func(lo, hi int)) []float32 {
		t.Helper()
		m.ZeroGrad()
		for mb := range 2 {
			if _, err := m.Forward(x[mb*12:mb*12+12], y[mb*12:mb*12+12], 1, 12); err != nil {
				t.Fatal(err)
			}
			if mb == 1 {
				m.GradReady = hook
			}
			if err := m.Backward(0.5); err != nil {
				t.Fatal(err)
			}
			m.GradReady = nil
		}
		return slices.Clone(m.Grads)
	}
	ref := backward(nil)

	// The same with the hook on the last micro-batch: record each range and
	// a copy of its values when reported.
	var got [][2]int
	var early [][]float32
	final := backward(func(lo, hi int) {
		got = append(got, [2]int{lo, hi})
		early = append(early, slices.Clone(m.Grads[lo:hi]))
	})
	if !slices.Equal(got, want) {
		t.Fatalf("reported %v, want %v", got, want)
	}
	covered := 0
	for i, r := range got {
		covered += r[1] - r[0]
		if i > 0 && r[1] != got[i-1][0] {
			t.Errorf("range %d %v does not end where range %d %v starts", i, r, i-1, got[i-1])
		}
		for j, v := range early[i] {
			if math.Float32bits(v) != math.Float32bits(final[r[0]+j]) {
				t.Fatalf("range %v: element %d was %v when reported, %v after Backward", r, r[0]+j, v, final[r[0]+j])
			}
		}
	}
	if covered != len(m.Grads) {
		t.Errorf("ranges cover %d of %d gradients", covered, len(m.Grads))
	}
	for i := range ref {
		if math.Float32bits(ref[i]) != math.Float32bits(final[i]) {
			t.Fatalf("gradient %d: %v without the hook, %v with it", i, ref[i], final[i])
		}
	}
}

// TestGradReadyNoTargets: a batch whose targets are all −1 adds nothing,
// and still reports every range, in order, so that a worker with nothing
// to add still hands every bucket to the all-reduce.
func TestGradReadyNoTargets(t *testing.T) {
	m, x, y := gradReadyBatch(t, tinyRef)
	for i := range y {
		y[i] = -1
	}
	if _, err := m.Forward(x, y, 2, 12); err != nil {
		t.Fatal(err)
	}
	var got [][2]int
	m.GradReady = func(lo, hi int) { got = append(got, [2]int{lo, hi}) }
	if err := m.Backward(1); err != nil {
		t.Fatal(err)
	}
	if want := m.GradRanges(); !slices.Equal(got, want) {
		t.Errorf("reported %v, want %v", got, want)
	}
	for i, g := range m.Grads {
		if g != 0 {
			t.Fatalf("gradient %d = %v, want 0", i, g)
		}
	}
}
