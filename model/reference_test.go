package model_test

import (
	"math"
	"testing"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
)

// The tiny GPT-2 of testdata/gpt2_tiny.safetensors (scripts/gen_reference.py):
// V=64, maxT=16, C=32, L=2, NH=4, batch 2×12.
var tinyRef = model.Config{Vocab: 64, Context: 16, Dim: 32, Layers: 2, Heads: 4}

// refFixture is the decoded model fixture.
type refFixture struct {
	t *testing.T
	f *safetensors.File
}

func loadRef(t *testing.T) refFixture {
	t.Helper()
	f, err := safetensors.ReadFile("testdata/gpt2_tiny.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	return refFixture{t, f}
}

func (r refFixture) f32(name string) []float32 {
	r.t.Helper()
	tt, ok := r.f.Tensor(name)
	if !ok {
		r.t.Fatalf("fixture has no tensor %s", name)
	}
	v, err := tt.Float32s()
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

func (r refFixture) i32(name string) []int32 {
	r.t.Helper()
	tt, ok := r.f.Tensor(name)
	if !ok {
		r.t.Fatalf("fixture has no tensor %s", name)
	}
	v, err := tt.Int32s()
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

// paramKey is the fixture's key of a braid parameter: the embeddings are
// "wte" and "wpe" there, everything else has the same name.
func paramKey(prefix, name string) string {
	switch name {
	case "wte.weight":
		name = "wte"
	case "wpe.weight":
		name = "wpe"
	}
	return prefix + name
}

func maxAbsDiff(a, b []float32) (d, maxb float64) {
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
		if math.IsNaN(float64(a[i])) {
			d = math.Inf(1)
		}
		maxb = math.Max(maxb, math.Abs(float64(b[i])))
	}
	return d, maxb
}

// TestModelMatchesPyTorch: logits, loss and every parameter gradient of a
// 2-layer model agree with PyTorch, under every matmul implementation.
func TestModelMatchesPyTorch(t *testing.T) {
	ref := loadRef(t)
	for _, impl := range kernels.Implementations() {
		t.Run(impl.String(), func(t *testing.T) {
			defer kernels.SetImpl(kernels.SetImpl(impl))
			m, err := model.New(tinyRef, 2, 12)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tinyRef.Layout() {
				copy(m.Params[p.Offset:p.Offset+p.Size], ref.f32(paramKey("param.", p.Name)))
			}
			loss, err := m.Forward(ref.i32("tokens"), ref.i32("targets"), 2, 12)
			if err != nil {
				t.Fatal(err)
			}
			d, _ := maxAbsDiff(m.Logits(), ref.f32("logits"))
			t.Logf("logits max abs diff %.2e", d)
			if d > 2e-5 {
				t.Errorf("logits differ from PyTorch by %.3g > 2e-5", d)
			}
			wantLoss := ref.f32("loss")[0]
			t.Logf("loss %.7f, PyTorch %.7f", loss, wantLoss)
			if math.Abs(float64(loss-wantLoss)) > 1e-5 {
				t.Errorf("loss %v, PyTorch %v", loss, wantLoss)
			}
			m.ZeroGrad()
			if err := m.Backward(1); err != nil {
				t.Fatal(err)
			}
			var worst float64
			for _, p := range tinyRef.Layout() {
				d, maxw := maxAbsDiff(m.Grads[p.Offset:p.Offset+p.Size], ref.f32(paramKey("grad.", p.Name)))
				worst = math.Max(worst, d)
				if d > 1e-5*(1+maxw) {
					t.Errorf("grad %s differs from PyTorch by %.3g", p.Name, d)
				}
			}
			t.Logf("every parameter gradient: max abs diff %.2e", worst)
		})
	}
}

// TestForwardBackwardAllocateNothing: the step loop allocates nothing once
// the model exists (the kernels pool their task structs).
func TestForwardBackwardAllocateNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items; allocation counts are checked without -race (make test-short)")
	}
	m, err := model.New(tinyRef, 2, 12)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	ref := loadRef(t)
	x, y := ref.i32("tokens"), ref.i32("targets")
	step := func() {
		m.ZeroGrad()
		if _, err := m.Forward(x, y, 2, 12); err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(1); err != nil {
			t.Fatal(err)
		}
	}
	step()
	if n := allocsPerRun(10, step); n != 0 {
		t.Errorf("a training step allocates %v times, want 0", n)
	}
}

func TestForwardRejectsBadTokens(t *testing.T) {
	m, err := model.New(tinyRef, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		x, y []int32
		B, T int
	}{
		"token too large":  {[]int32{0, 1, 64, 2}, nil, 1, 4},
		"negative token":   {[]int32{0, -1, 3, 2}, nil, 1, 4},
		"target too large": {[]int32{0, 1, 2, 3}, []int32{0, 1, 2, 99}, 1, 4},
		"too long":         {make([]int32, 5), nil, 1, 5},
		"wrong length":     {make([]int32, 3), nil, 1, 4},
	} {
		if _, err := m.Forward(c.x, c.y, c.B, c.T); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := m.Backward(1); err == nil {
		t.Error("Backward without a Forward with targets: no error")
	}
}

func TestInitIsDeterministic(t *testing.T) {
	a, _ := model.New(tinyRef, 1, 4)
	b, _ := model.New(tinyRef, 1, 4)
	a.Init(7)
	b.Init(7)
	for i := range a.Params {
		if a.Params[i] != b.Params[i] {
			t.Fatalf("param %d differs between two inits with the same seed", i)
		}
	}
	b.Init(8)
	same := 0
	for i := range a.Params {
		if a.Params[i] == b.Params[i] {
			same++
		}
	}
	if same > len(a.Params)/2 {
		t.Errorf("seeds 7 and 8 give %d of %d equal parameters", same, len(a.Params))
	}
}
