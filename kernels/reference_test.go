package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model/safetensors"
)

// This file compares the kernels and their naive references with PyTorch
// (testdata/reference.safetensors, written by scripts/gen_reference.py in
// float64). Tolerances are absolute, relative to 1 + max|reference|, and the
// max difference is logged.

type fixture struct {
	t *testing.T
	f *safetensors.File
}

func loadFixture(t *testing.T) fixture {
	t.Helper()
	f, err := safetensors.ReadFile("testdata/reference.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	return fixture{t, f}
}

func (fx fixture) f32(name string) []float32 {
	fx.t.Helper()
	tt, ok := fx.f.Tensor(name)
	if !ok {
		fx.t.Fatalf("fixture has no tensor %s", name)
	}
	v, err := tt.Float32s()
	if err != nil {
		fx.t.Fatalf("%s: %v", name, err)
	}
	return v
}

func (fx fixture) i32(name string) []int32 {
	fx.t.Helper()
	tt, ok := fx.f.Tensor(name)
	if !ok {
		fx.t.Fatalf("fixture has no tensor %s", name)
	}
	v, err := tt.Int32s()
	if err != nil {
		fx.t.Fatalf("%s: %v", name, err)
	}
	return v
}

func compare(t *testing.T, name string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, PyTorch has %d", name, len(got), len(want))
	}
	var maxd, maxw float64
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if d > maxd || math.IsNaN(d) {
			maxd = d
		}
		maxw = math.Max(maxw, math.Abs(float64(want[i])))
	}
	t.Logf("%-28s max abs diff vs PyTorch %.2e", name, maxd)
	if !(maxd <= tol*(1+maxw)) {
		t.Errorf("%s: max abs diff vs PyTorch %.3g exceeds %.3g", name, maxd, tol*(1+maxw))
	}
}

// implementations runs f for the optimised kernels under every Impl, and
// for the naive references.
func implementations(t *testing.T, f func(t *testing.T, naive bool)) {
	t.Run("naive", func(t *testing.T) { f(t, true) })
	for _, impl := range kernels.Implementations() {
		t.Run(impl.String(), func(t *testing.T) {
			defer kernels.SetImpl(kernels.SetImpl(impl))
			f(t, false)
		})
	}
}

func TestLinearMatchesPyTorch(t *testing.T) {
	fx := loadFixture(t)
	B, T, C, OC := 2, 5, 12, 20
	inp, w, b, dout := fx.f32("linear.inp"), fx.f32("linear.weight"), fx.f32("linear.bias"), fx.f32("linear.dout")
	implementations(t, func(t *testing.T, naive bool) {
		out := make([]float32, B*T*OC)
		di, dw, db := make([]float32, B*T*C), make([]float32, OC*C), make([]float32, OC)
		if naive {
			kernels.NaiveLinearForward(out, inp, w, b, B*T, C, OC)
			kernels.NaiveLinearBackward(di, dw, db, dout, inp, w, B*T, C, OC)
		} else {
			kernels.LinearForward(out, inp, w, b, B*T, C, OC)
			kernels.LinearBackward(di, dw, db, dout, inp, w, B*T, C, OC)
		}
		compare(t, "linear.out", out, fx.f32("linear.out"), 1e-6)
		compare(t, "linear.dinp", di, fx.f32("linear.dinp"), 1e-6)
		compare(t, "linear.dweight", dw, fx.f32("linear.dweight"), 1e-6)
		compare(t, "linear.dbias", db, fx.f32("linear.dbias"), 1e-6)
	})
}

func TestLayerNormMatchesPyTorch(t *testing.T) {
	fx := loadFixture(t)
	N, C := 10, 12
	inp, w, b, dout := fx.f32("layernorm.inp"), fx.f32("layernorm.weight"), fx.f32("layernorm.bias"), fx.f32("layernorm.dout")
	implementations(t, func(t *testing.T, naive bool) {
		out, mean, rstd := make([]float32, N*C), make([]float32, N), make([]float32, N)
		di, dw, db := make([]float32, N*C), make([]float32, C), make([]float32, C)
		if naive {
			kernels.NaiveLayerNormForward(out, mean, rstd, inp, w, b, N, C)
			kernels.NaiveLayerNormBackward(di, dw, db, dout, inp, w, mean, rstd, N, C)
		} else {
			kernels.LayerNormForward(out, mean, rstd, inp, w, b, N, C)
			kernels.LayerNormBackward(di, dw, db, dout, inp, w, mean, rstd, N, C)
		}
		compare(t, "layernorm.out", out, fx.f32("layernorm.out"), 1e-6)
		compare(t, "layernorm.mean", mean, fx.f32("layernorm.mean"), 1e-6)
		compare(t, "layernorm.rstd", rstd, fx.f32("layernorm.rstd"), 1e-6)
		compare(t, "layernorm.dinp", di, fx.f32("layernorm.dinp"), 1e-6)
		compare(t, "layernorm.dweight", dw, fx.f32("layernorm.dweight"), 1e-6)
		compare(t, "layernorm.dbias", db, fx.f32("layernorm.dbias"), 1e-6)
	})
}

func TestGeluMatchesPyTorch(t *testing.T) {
	fx := loadFixture(t)
	inp, dout := fx.f32("gelu.inp"), fx.f32("gelu.dout")
	implementations(t, func(t *testing.T, naive bool) {
		out, di := make([]float32, len(inp)), make([]float32, len(inp))
		if naive {
			kernels.NaiveGeluForward(out, inp)
			kernels.NaiveGeluBackward(di, inp, dout)
		} else {
			kernels.GeluForward(out, inp)
			kernels.GeluBackward(di, inp, dout)
		}
		compare(t, "gelu.out", out, fx.f32("gelu.out"), 1e-6)
		compare(t, "gelu.dinp", di, fx.f32("gelu.dinp"), 1e-6)
	})
}

func TestAttentionMatchesPyTorch(t *testing.T) {
	fx := loadFixture(t)
	B, T, C, NH := 2, 6, 16, 4
	qkv, dout := fx.f32("attention.qkv"), fx.f32("attention.dout")
	implementations(t, func(t *testing.T, naive bool) {
		out, att, dqkv := make([]float32, B*T*C), make([]float32, B*NH*T*T), make([]float32, B*T*3*C)
		if naive {
			kernels.NaiveAttentionForward(out, att, qkv, B, T, C, NH)
			kernels.NaiveAttentionBackward(dqkv, dout, qkv, att, B, T, C, NH)
		} else {
			kernels.AttentionForward(out, att, qkv, B, T, C, NH)
			kernels.AttentionBackward(dqkv, make([]float32, B*NH*T*T), dout, qkv, att, B, T, C, NH)
		}
		compare(t, "attention.out", out, fx.f32("attention.out"), 1e-6)
		compare(t, "attention.att", att, fx.f32("attention.att"), 1e-6)
		compare(t, "attention.dqkv", dqkv, fx.f32("attention.dqkv"), 1e-6)
	})
}

func TestCrossEntropyMatchesPyTorch(t *testing.T) {
	fx := loadFixture(t)
	N, V := 10, 40
	logits, targets := fx.f32("crossentropy.logits"), fx.i32("crossentropy.targets")
	implementations(t, func(t *testing.T, naive bool) {
		losses, probs := make([]float32, N), make([]float32, N*V)
		var mean float32
		if naive {
			mean = kernels.NaiveSoftmaxCrossEntropyForward(losses, probs, logits, targets, N, V)
		} else {
			mean = kernels.SoftmaxCrossEntropyForward(losses, probs, logits, targets, N, V)
		}
		dl := make([]float32, N*V)
		kernels.SoftmaxCrossEntropyBackward(dl, probs, targets, 1/float32(N), N, V)
		compare(t, "crossentropy.probs", probs, fx.f32("crossentropy.probs"), 1e-6)
		compare(t, "crossentropy.losses", losses, fx.f32("crossentropy.losses"), 1e-6)
		compare(t, "crossentropy.loss", []float32{mean}, fx.f32("crossentropy.loss"), 1e-6)
		compare(t, "crossentropy.dlogits", dl, fx.f32("crossentropy.dlogits"), 1e-6)
	})
}

func TestEncoderMatchesPyTorch(t *testing.T) {
	fx := loadFixture(t)
	B, T, C, V, maxT := 2, 5, 12, 40, 8
	tokens, wte, wpe, dout := fx.i32("encoder.tokens"), fx.f32("encoder.wte"), fx.f32("encoder.wpe"), fx.f32("encoder.dout")
	out := make([]float32, B*T*C)
	kernels.EncoderForward(out, tokens, wte, wpe, B, T, C)
	dwte, dwpe := make([]float32, V*C), make([]float32, maxT*C)
	kernels.EncoderBackward(dwte, dwpe, dout, tokens, B, T, C)
	compare(t, "encoder.out", out, fx.f32("encoder.out"), 1e-6)
	compare(t, "encoder.dwte", dwte, fx.f32("encoder.dwte"), 1e-6)
	compare(t, "encoder.dwpe", dwpe, fx.f32("encoder.dwpe"), 1e-6)
}

func TestAdamWMatchesPyTorch(t *testing.T) {
	fx := loadFixture(t)
	p0, grads, params := fx.f32("adamw.param0"), fx.f32("adamw.grads"), fx.f32("adamw.params")
	n := len(p0)
	for _, naive := range []bool{true, false} {
		p, m, v := append([]float32{}, p0...), make([]float32, n), make([]float32, n)
		for s := 0; s < 3; s++ {
			hp := kernels.AdamWParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Step: s + 1}
			if naive {
				kernels.NaiveAdamW(p, grads[s*n:(s+1)*n], m, v, hp)
			} else {
				kernels.AdamW(p, grads[s*n:(s+1)*n], m, v, hp)
			}
			compare(t, fmt.Sprintf("adamw.params[%d] naive=%v", s, naive), p, params[s*n:(s+1)*n], 1e-6)
		}
		compare(t, "adamw.m", m, fx.f32("adamw.m"), 1e-6)
		compare(t, "adamw.v", v, fx.f32("adamw.v"), 1e-6)
	}
}

func TestClipMatchesPyTorch(t *testing.T) {
	fx := loadFixture(t)
	g := fx.f32("clip.grad")
	if naive := kernels.NaiveGradNorm(g); math.Abs(float64(naive-fx.f32("clip.norm")[0])) > 1e-6 {
		t.Errorf("naive norm %v, PyTorch %v", naive, fx.f32("clip.norm")[0])
	}
	norm := kernels.ClipGradNorm(g, 1)
	compare(t, "clip.norm", []float32{norm}, fx.f32("clip.norm"), 1e-6)
	compare(t, "clip.grad_after", g, fx.f32("clip.grad_after"), 1e-6)
	small := fx.f32("clip.small_grad")
	kernels.ClipGradNorm(small, 1)
	compare(t, "clip.small_grad_after", small, fx.f32("clip.small_grad_after"), 0)
}
