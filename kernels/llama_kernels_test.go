package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// The Llama family's kernels (RMSNorm, RoPE, SwiGLU, grouped-query and
// sliding-window attention, the position-free embedding) against their
// naive references, under every Impl and thread count.

func TestRMSNormAgainstNaive(t *testing.T) {
	forEachConfig(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(21, 22))
		for _, sh := range [][2]int{{1, 1}, {7, 13}, {70, 96}} {
			N, C := sh[0], sh[1]
			inp, w := randSlice(rng, N*C, 2), randSlice(rng, C, 1)
			out, rstd := make([]float32, N*C), make([]float32, N)
			wout, wrstd := make([]float32, N*C), make([]float32, N)
			RMSNormForward(out, rstd, inp, w, N, C, 1e-5)
			NaiveRMSNormForward(wout, wrstd, inp, w, N, C, 1e-5)
			checkClose(t, fmt.Sprintf("out %v", sh), out, wout, 1e-5)
			checkClose(t, fmt.Sprintf("rstd %v", sh), rstd, wrstd, 1e-5)
			dout := randSlice(rng, N*C, 1)
			// Gradients accumulate: start from the same non-zero values.
			di, dw := randSlice(rng, N*C, 1), randSlice(rng, C, 1)
			wdi, wdw := slices.Clone(di), slices.Clone(dw)
			RMSNormBackward(di, dw, dout, inp, w, rstd, N, C)
			NaiveRMSNormBackward(wdi, wdw, dout, inp, w, wrstd, N, C)
			checkClose(t, fmt.Sprintf("dinp %v", sh), di, wdi, 1e-5)
			checkClose(t, fmt.Sprintf("dweight %v", sh), dw, wdw, 1e-5*float64(N))
			// Without a weight gradient, dinp is the same.
			di2 := slices.Clone(wdi)
			RMSNormBackward(di2, nil, dout, inp, w, rstd, N, C)
			NaiveRMSNormBackward(wdi, nil, dout, inp, w, wrstd, N, C)
			checkClose(t, fmt.Sprintf("dinp without dweight %v", sh), di2, wdi, 1e-5)
		}
	})
}

// ropeTables returns cos and sin (T, hd/2) for base theta.
func ropeTables(T, hd int, theta float64) (cos, sin []float32) {
	half := hd / 2
	cos, sin = make([]float32, T*half), make([]float32, T*half)
	for t := range T {
		for j := range half {
			a := float64(t) * math.Pow(theta, -2*float64(j)/float64(hd))
			cos[t*half+j], sin[t*half+j] = float32(math.Cos(a)), float32(math.Sin(a))
		}
	}
	return cos, sin
}

func TestRoPEAgainstNaive(t *testing.T) {
	forEachConfig(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(23, 24))
		// B, T, nh, hd, ld: a row wider than the rotated heads (v stays).
		for _, sh := range [][5]int{{1, 1, 1, 2, 2}, {2, 7, 3, 8, 40}, {3, 33, 6, 16, 128}} {
			B, T, nh, hd, ld := sh[0], sh[1], sh[2], sh[3], sh[4]
			cos, sin := ropeTables(T, hd, 100)
			x := randSlice(rng, B*T*ld, 1)
			got, want := slices.Clone(x), slices.Clone(x)
			RoPEForward(got, cos, sin, B, T, nh, hd, ld)
			NaiveRoPEForward(want, cos, sin, B, T, nh, hd, ld)
			checkClose(t, fmt.Sprintf("forward %v", sh), got, want, 1e-6)
			for r := range B * T { // channels past nh·hd are untouched
				if !slices.Equal(got[r*ld+nh*hd:(r+1)*ld], x[r*ld+nh*hd:(r+1)*ld]) {
					t.Fatalf("%v: row %d changed past the rotated heads", sh, r)
				}
			}
			RoPEBackward(got, cos, sin, B, T, nh, hd, ld)
			NaiveRoPEBackward(want, cos, sin, B, T, nh, hd, ld)
			checkClose(t, fmt.Sprintf("backward %v", sh), got, want, 1e-6)
			// The backward rotation undoes the forward one.
			checkClose(t, fmt.Sprintf("round trip %v", sh), got, x, 1e-6)
		}
	})
}

func TestSwiGLUAgainstNaive(t *testing.T) {
	forEachConfig(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(25, 26))
		for _, sh := range [][2]int{{1, 1}, {5, 17}, {40, 300}} {
			N, H := sh[0], sh[1]
			gu := randSlice(rng, N*2*H, 3)
			gu[0] = 90 // saturated gates
			gu[1%len(gu)] = -90
			out, want := make([]float32, N*H), make([]float32, N*H)
			SwiGLUForward(out, gu, N, H)
			NaiveSwiGLUForward(want, gu, N, H)
			checkClose(t, fmt.Sprintf("out %v", sh), out, want, 1e-6)
			dout := randSlice(rng, N*H, 1)
			dgu := randSlice(rng, N*2*H, 1)
			wdgu := slices.Clone(dgu)
			SwiGLUBackward(dgu, dout, gu, N, H)
			NaiveSwiGLUBackward(wdgu, dout, gu, N, H)
			checkClose(t, fmt.Sprintf("dgu %v", sh), dgu, wdgu, 1e-6)
		}
	})
}

func TestAttentionGQAAgainstNaive(t *testing.T) {
	forEachConfig(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(27, 28))
		// B, T, NH, KVH, hd, window. T = 70 crosses the 64-row block;
		// windows shorter than T, equal to it and longer.
		for _, sh := range [][6]int{
			{1, 1, 1, 1, 2, 0}, {2, 7, 4, 2, 4, 0}, {2, 9, 4, 1, 8, 3}, {1, 70, 6, 2, 8, 0},
			{2, 70, 6, 3, 4, 17}, {1, 12, 2, 2, 6, 5}, {1, 12, 4, 2, 4, 12}, {1, 12, 4, 4, 4, 100},
		} {
			B, T, NH, KVH, hd, window := sh[0], sh[1], sh[2], sh[3], sh[4], sh[5]
			W, C := (NH+2*KVH)*hd, NH*hd
			qkv := randSlice(rng, B*T*W, 1)
			out, att := make([]float32, B*T*C), make([]float32, B*NH*T*T)
			wout, watt := make([]float32, B*T*C), make([]float32, B*NH*T*T)
			AttentionForwardGQA(out, att, qkv, B, T, NH, KVH, hd, window)
			NaiveAttentionForwardGQA(wout, watt, qkv, B, T, NH, KVH, hd, window)
			checkClose(t, fmt.Sprintf("out %v", sh), out, wout, 1e-5)
			checkClose(t, fmt.Sprintf("att %v", sh), att, watt, 1e-5)
			for i := range T { // nothing outside the window
				for j := range T {
					if (j > i || (window > 0 && j <= i-window)) && att[i*T+j] != 0 {
						t.Fatalf("%v: att[%d, %d] = %v outside the window", sh, i, j, att[i*T+j])
					}
				}
			}
			dout := randSlice(rng, B*T*C, 1)
			dqkv := randSlice(rng, B*T*W, 1)
			want := slices.Clone(dqkv)
			var dkv []float32
			if KVH != NH {
				dkv = randSlice(rng, B*NH*T*2*hd, 1) // overwritten, not accumulated into
			}
			AttentionBackwardGQA(dqkv, randSlice(rng, B*NH*T*T, 1), dkv, dout, qkv, att, B, T, NH, KVH, hd, window)
			NaiveAttentionBackwardGQA(want, dout, qkv, watt, B, T, NH, KVH, hd, window)
			checkClose(t, fmt.Sprintf("dqkv %v", sh), dqkv, want, 1e-5*float64(T))
		}
	})
}

// TestAttentionGQAWithOneGroupIsAttention: with as many key heads as
// query heads and no window, the GQA kernels compute bitwise what GPT-2's
// do.
func TestAttentionGQAWithOneGroupIsAttention(t *testing.T) {
	rng := rand.New(rand.NewPCG(29, 30))
	B, T, C, NH := 2, 70, 24, 3
	qkv, dout := randSlice(rng, B*T*3*C, 1), randSlice(rng, B*T*C, 1)
	out1, att1, out2, att2 := make([]float32, B*T*C), make([]float32, B*NH*T*T), make([]float32, B*T*C), make([]float32, B*NH*T*T)
	AttentionForward(out1, att1, qkv, B, T, C, NH)
	AttentionForwardGQA(out2, att2, qkv, B, T, NH, NH, C/NH, 0)
	d1, d2 := make([]float32, B*T*3*C), make([]float32, B*T*3*C)
	AttentionBackward(d1, make([]float32, B*NH*T*T), dout, qkv, att1, B, T, C, NH)
	AttentionBackwardGQA(d2, make([]float32, B*NH*T*T), nil, dout, qkv, att2, B, T, NH, NH, C/NH, 0)
	for name, p := range map[string][2][]float32{"out": {out1, out2}, "att": {att1, att2}, "dqkv": {d1, d2}} {
		for i := range p[0] {
			if math.Float32bits(p[0][i]) != math.Float32bits(p[1][i]) {
				t.Fatalf("%s[%d]: %v with AttentionForward, %v with the GQA kernel", name, i, p[0][i], p[1][i])
			}
		}
	}
}

func TestEmbedding(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	N, C, V := 6, 5, 4
	tokens := []int32{1, 3, 1, 0, 1, 2} // repeats accumulate
	wte := randSlice(rng, V*C, 1)
	out := make([]float32, N*C)
	EmbeddingForward(out, tokens, wte, N, C)
	dout := randSlice(rng, N*C, 1)
	dwte := make([]float32, V*C)
	EmbeddingBackward(dwte, dout, tokens, N, C)
	want := make([]float32, V*C)
	for i, tok := range tokens {
		if !slices.Equal(out[i*C:(i+1)*C], wte[int(tok)*C:int(tok+1)*C]) {
			t.Fatalf("row %d is not token %d's embedding", i, tok)
		}
		for c := range C {
			want[int(tok)*C+c] += dout[i*C+c]
		}
	}
	if !slices.Equal(dwte, want) {
		t.Fatalf("EmbeddingBackward %v, want %v", dwte, want)
	}
}

// TestLlamaKernelsThreadCountInvariance: the backward kernels of the Llama
// family give bitwise the same gradients with 1 thread and with all.
func TestLlamaKernelsThreadCountInvariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	B, T, NH, KVH, hd, H := 2, 40, 6, 2, 8, 24
	N, C, W := B*T, NH*hd, (NH+2*KVH)*hd
	inp, w, dout := randSlice(rng, N*C, 1), randSlice(rng, C, 1), randSlice(rng, N*C, 1)
	qkv, gu, dh := randSlice(rng, N*W, 1), randSlice(rng, N*2*H, 1), randSlice(rng, N*H, 1)
	cos, sin := ropeTables(T, hd, 10000)
	run := func(th int) []float32 {
		prev := SetThreads(th)
		defer SetThreads(prev)
		rstd, out, di, dw := make([]float32, N), make([]float32, N*C), make([]float32, N*C), make([]float32, C)
		RMSNormForward(out, rstd, inp, w, N, C, 1e-6)
		RMSNormBackward(di, dw, dout, inp, w, rstd, N, C)
		att, y, dqkv := make([]float32, B*NH*T*T), make([]float32, N*C), make([]float32, N*W)
		AttentionForwardGQA(y, att, qkv, B, T, NH, KVH, hd, 9)
		AttentionBackwardGQA(dqkv, make([]float32, B*NH*T*T), make([]float32, B*NH*T*2*hd), dout, qkv, att, B, T, NH, KVH, hd, 9)
		RoPEBackward(dqkv, cos, sin, B, T, NH+KVH, hd, W)
		dgu := make([]float32, N*2*H)
		SwiGLUBackward(dgu, dh, gu, N, H)
		return slices.Concat(out, di, dw, y, dqkv, dgu)
	}
	a, b := run(1), run(0)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("element %d: %v with 1 thread, %v with all", i, a[i], b[i])
		}
	}
}

func TestLlamaKernelsPanicOnBadShapes(t *testing.T) {
	for name, f := range map[string]func(){
		"rmsnorm": func() {
			RMSNormForward(make([]float32, 4), make([]float32, 1), make([]float32, 4), make([]float32, 2), 2, 2, 1e-6)
		},
		"rope odd": func() {
			RoPEForward(make([]float32, 6), make([]float32, 3), make([]float32, 3), 1, 2, 1, 3, 3)
		},
		"rope short": func() {
			RoPEForward(make([]float32, 7), make([]float32, 4), make([]float32, 4), 1, 2, 2, 2, 4)
		},
		"swiglu": func() { SwiGLUForward(make([]float32, 4), make([]float32, 7), 2, 2) },
		"groups": func() {
			AttentionForwardGQA(make([]float32, 12), make([]float32, 12), make([]float32, 42), 1, 2, 3, 2, 2, 0)
		},
		"window": func() {
			AttentionForwardGQA(make([]float32, 8), make([]float32, 8), make([]float32, 16), 1, 2, 2, 1, 2, -1)
		},
		"no dkv": func() {
			AttentionBackwardGQA(make([]float32, 16), make([]float32, 8), nil, make([]float32, 8), make([]float32, 16), make([]float32, 8), 1, 2, 2, 1, 2, 0)
		},
		"token":  func() { EmbeddingForward(make([]float32, 2), []int32{5}, make([]float32, 4), 1, 2) },
		"dtoken": func() { EmbeddingBackward(make([]float32, 4), make([]float32, 2), []int32{-1}, 1, 2) },
	} {
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
