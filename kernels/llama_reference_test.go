package kernels_test

import (
	"strconv"
	"testing"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model/safetensors"
)

// The Llama family's kernels and their naive references against PyTorch
// (testdata/llama_kernels.safetensors, written by
// scripts/gen_llama_reference.py in float64), as reference_test.go does
// for the others.

func loadLlamaFixture(t *testing.T) fixture {
	t.Helper()
	f, err := safetensors.ReadFile("testdata/llama_kernels.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	return fixture{t, f}
}

// meta reads an integer of the fixture's metadata.
func (fx fixture) meta(key string) int {
	fx.t.Helper()
	v, err := strconv.Atoi(fx.f.Metadata[key])
	if err != nil {
		fx.t.Fatalf("fixture metadata %s: %v", key, err)
	}
	return v
}

func TestRMSNormMatchesPyTorch(t *testing.T) {
	fx := loadLlamaFixture(t)
	N, C := fx.meta("rmsnorm.N"), fx.meta("rmsnorm.C")
	inp, w, dout := fx.f32("rmsnorm.inp"), fx.f32("rmsnorm.weight"), fx.f32("rmsnorm.dout")
	implementations(t, func(t *testing.T, naive bool) {
		out, rstd, di, dw := make([]float32, N*C), make([]float32, N), make([]float32, N*C), make([]float32, C)
		if naive {
			kernels.NaiveRMSNormForward(out, rstd, inp, w, N, C, 1e-5)
			kernels.NaiveRMSNormBackward(di, dw, dout, inp, w, rstd, N, C)
		} else {
			kernels.RMSNormForward(out, rstd, inp, w, N, C, 1e-5)
			kernels.RMSNormBackward(di, dw, dout, inp, w, rstd, N, C)
		}
		compare(t, "rmsnorm.out", out, fx.f32("rmsnorm.out"), 1e-6)
		compare(t, "rmsnorm.rstd", rstd, fx.f32("rmsnorm.rstd"), 1e-6)
		compare(t, "rmsnorm.dinp", di, fx.f32("rmsnorm.dinp"), 1e-6)
		compare(t, "rmsnorm.dweight", dw, fx.f32("rmsnorm.dweight"), 1e-6)
	})
}

func TestRoPEMatchesPyTorch(t *testing.T) {
	fx := loadLlamaFixture(t)
	B, T, nh, hd := fx.meta("rope.B"), fx.meta("rope.T"), fx.meta("rope.nh"), fx.meta("rope.hd")
	cos, sin := fx.f32("rope.cos"), fx.f32("rope.sin")
	implementations(t, func(t *testing.T, naive bool) {
		x := append([]float32{}, fx.f32("rope.inp")...)
		d := append([]float32{}, fx.f32("rope.dout")...)
		if naive {
			kernels.NaiveRoPEForward(x, cos, sin, B, T, nh, hd, nh*hd)
			kernels.NaiveRoPEBackward(d, cos, sin, B, T, nh, hd, nh*hd)
		} else {
			kernels.RoPEForward(x, cos, sin, B, T, nh, hd, nh*hd)
			kernels.RoPEBackward(d, cos, sin, B, T, nh, hd, nh*hd)
		}
		compare(t, "rope.out", x, fx.f32("rope.out"), 1e-6)
		compare(t, "rope.dinp", d, fx.f32("rope.dinp"), 1e-6)
	})
}

func TestSwiGLUMatchesPyTorch(t *testing.T) {
	fx := loadLlamaFixture(t)
	gu, dout := fx.f32("swiglu.gu"), fx.f32("swiglu.dout")
	N, H := 10, len(dout)/10
	implementations(t, func(t *testing.T, naive bool) {
		out, dgu := make([]float32, N*H), make([]float32, N*2*H)
		if naive {
			kernels.NaiveSwiGLUForward(out, gu, N, H)
			kernels.NaiveSwiGLUBackward(dgu, dout, gu, N, H)
		} else {
			kernels.SwiGLUForward(out, gu, N, H)
			kernels.SwiGLUBackward(dgu, dout, gu, N, H)
		}
		compare(t, "swiglu.out", out, fx.f32("swiglu.out"), 1e-6)
		compare(t, "swiglu.dgu", dgu, fx.f32("swiglu.dgu"), 1e-6)
	})
}

func TestAttentionGQAMatchesPyTorch(t *testing.T) {
	fx := loadLlamaFixture(t)
	B, T, NH, KVH, hd, window := fx.meta("gqa.B"), fx.meta("gqa.T"), fx.meta("gqa.NH"), fx.meta("gqa.KVH"), fx.meta("gqa.hd"), fx.meta("gqa.window")
	qkv, dout := fx.f32("gqa.qkv"), fx.f32("gqa.dout")
	implementations(t, func(t *testing.T, naive bool) {
		out, att, dqkv := make([]float32, B*T*NH*hd), make([]float32, B*NH*T*T), make([]float32, len(qkv))
		if naive {
			kernels.NaiveAttentionForwardGQA(out, att, qkv, B, T, NH, KVH, hd, window)
			kernels.NaiveAttentionBackwardGQA(dqkv, dout, qkv, att, B, T, NH, KVH, hd, window)
		} else {
			kernels.AttentionForwardGQA(out, att, qkv, B, T, NH, KVH, hd, window)
			kernels.AttentionBackwardGQA(dqkv, make([]float32, B*NH*T*T), make([]float32, B*NH*T*2*hd), dout, qkv, att, B, T, NH, KVH, hd, window)
		}
		compare(t, "gqa.out", out, fx.f32("gqa.out"), 1e-6)
		compare(t, "gqa.att", att, fx.f32("gqa.att"), 1e-6)
		compare(t, "gqa.dqkv", dqkv, fx.f32("gqa.dqkv"), 1e-6)
	})
}
