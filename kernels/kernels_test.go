package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// This file checks every kernel against its naive reference (reference.go)
// on seeded random inputs, for every matmul implementation and thread count.
// reference_test.go checks both against PyTorch.

func randSlice(rng *rand.Rand, n int, scale float32) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64()) * scale
	}
	return s
}

// maxDiff returns max |a−b| and fails t if it exceeds tol·(1 + max|b|).
func checkClose(t *testing.T, name string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values, want %d", name, len(got), len(want))
	}
	var maxd, maxw float64
	at := -1
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if d > maxd || math.IsNaN(d) {
			maxd, at = d, i
		}
		maxw = math.Max(maxw, math.Abs(float64(want[i])))
	}
	t.Logf("%s: max abs diff %.3g (max |want| %.3g)", name, maxd, maxw)
	if !(maxd <= tol*(1+maxw)) {
		t.Errorf("%s: max abs diff %.3g at %d (got %v, want %v) exceeds %.3g", name, maxd, at, got[at], want[at], tol*(1+maxw))
	}
}

// forEachConfig runs f under every supported Impl, with 1 thread and all.
func forEachConfig(t *testing.T, f func(t *testing.T)) {
	for _, impl := range Implementations() {
		for _, th := range []int{1, 0} {
			t.Run(fmt.Sprintf("%s/threads=%d", impl, th), func(t *testing.T) {
				prevImpl, prevTh := SetImpl(impl), SetThreads(th)
				defer func() { SetImpl(prevImpl); SetThreads(prevTh) }()
				f(t)
			})
		}
	}
}

func TestLinearAgainstNaive(t *testing.T) {
	forEachConfig(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for _, sh := range [][3]int{{1, 1, 1}, {7, 13, 5}, {64, 48, 144}, {130, 96, 33}} {
			BT, C, OC := sh[0], sh[1], sh[2]
			inp, w, b := randSlice(rng, BT*C, 1), randSlice(rng, OC*C, 0.5), randSlice(rng, OC, 0.5)
			got, want := make([]float32, BT*OC), make([]float32, BT*OC)
			LinearForward(got, inp, w, b, BT, C, OC)
			NaiveLinearForward(want, inp, w, b, BT, C, OC)
			checkClose(t, fmt.Sprintf("out %v", sh), got, want, 1e-5*float64(C))
			LinearForward(got, inp, w, nil, BT, C, OC)
			NaiveLinearForward(want, inp, w, nil, BT, C, OC)
			checkClose(t, fmt.Sprintf("out nobias %v", sh), got, want, 1e-5*float64(C))

			dout := randSlice(rng, BT*OC, 1)
			// Gradients accumulate: start from the same non-zero values.
			seed := randSlice(rng, BT*C+OC*C+OC, 1)
			gi, gw, gb := append([]float32{}, seed[:BT*C]...), append([]float32{}, seed[BT*C:BT*C+OC*C]...), append([]float32{}, seed[BT*C+OC*C:]...)
			wi, ww, wb := append([]float32{}, gi...), append([]float32{}, gw...), append([]float32{}, gb...)
			LinearBackward(gi, gw, gb, dout, inp, w, BT, C, OC)
			NaiveLinearBackward(wi, ww, wb, dout, inp, w, BT, C, OC)
			checkClose(t, fmt.Sprintf("dinp %v", sh), gi, wi, 1e-5*float64(OC))
			checkClose(t, fmt.Sprintf("dweight %v", sh), gw, ww, 1e-5*float64(BT))
			checkClose(t, fmt.Sprintf("dbias %v", sh), gb, wb, 1e-5*float64(BT))
		}
	})
}

func TestLayerNormAgainstNaive(t *testing.T) {
	forEachConfig(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		N, C := 37, 96
		inp, w, b := randSlice(rng, N*C, 2), randSlice(rng, C, 1), randSlice(rng, C, 1)
		for i := range inp {
			inp[i] += 3 // a non-zero mean
		}
		out, mean, rstd := make([]float32, N*C), make([]float32, N), make([]float32, N)
		wout, wmean, wrstd := make([]float32, N*C), make([]float32, N), make([]float32, N)
		LayerNormForward(out, mean, rstd, inp, w, b, N, C)
		NaiveLayerNormForward(wout, wmean, wrstd, inp, w, b, N, C)
		checkClose(t, "out", out, wout, 1e-5)
		checkClose(t, "mean", mean, wmean, 1e-6)
		checkClose(t, "rstd", rstd, wrstd, 1e-5)
		dout := randSlice(rng, N*C, 1)
		di, dw, db := randSlice(rng, N*C, 1), randSlice(rng, C, 1), randSlice(rng, C, 1)
		wi, ww, wb := append([]float32{}, di...), append([]float32{}, dw...), append([]float32{}, db...)
		LayerNormBackward(di, dw, db, dout, inp, w, mean, rstd, N, C)
		NaiveLayerNormBackward(wi, ww, wb, dout, inp, w, mean, rstd, N, C)
		checkClose(t, "dinp", di, wi, 1e-5)
		checkClose(t, "dweight", dw, ww, 1e-5)
		checkClose(t, "dbias", db, wb, 1e-5)
	})
}

func TestGeluAgainstNaive(t *testing.T) {
	n := 20001
	inp := make([]float32, n)
	for i := range inp {
		inp[i] = -10 + 20*float32(i)/float32(n-1)
	}
	got, want := make([]float32, n), make([]float32, n)
	GeluForward(got, inp)
	NaiveGeluForward(want, inp)
	checkClose(t, "gelu", got, want, 1e-6)
	dout := make([]float32, n)
	for i := range dout {
		dout[i] = 1
	}
	gd, wd := make([]float32, n), make([]float32, n)
	GeluBackward(gd, inp, dout)
	NaiveGeluBackward(wd, inp, dout)
	checkClose(t, "gelu backward", gd, wd, 1e-6)
}

func TestExp32(t *testing.T) {
	var worst float64
	for x := float32(-87); x < 88.7; x += 0.0137 {
		got, want := float64(Exp32(x)), math.Exp(float64(x))
		rel := math.Abs(got-want) / want
		worst = math.Max(worst, rel)
	}
	t.Logf("Exp32 worst relative error %.3g", worst)
	if worst > 3e-7 {
		t.Errorf("Exp32 relative error %.3g > 3e-7", worst)
	}
	if !math.IsInf(float64(Exp32(100)), 1) || Exp32(-100) != 0 || !math.IsNaN(float64(Exp32(float32(math.NaN())))) {
		t.Error("Exp32 edge cases: want +Inf above range, 0 below, NaN for NaN")
	}
}

func TestAttentionAgainstNaive(t *testing.T) {
	forEachConfig(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		// T = 70 crosses the 64-row block of the blocked implementation.
		for _, sh := range [][4]int{{1, 1, 4, 1}, {2, 7, 16, 4}, {2, 70, 24, 3}} {
			B, T, C, NH := sh[0], sh[1], sh[2], sh[3]
			qkv := randSlice(rng, B*T*3*C, 1)
			out, att := make([]float32, B*T*C), make([]float32, B*NH*T*T)
			wout, watt := make([]float32, B*T*C), make([]float32, B*NH*T*T)
			AttentionForward(out, att, qkv, B, T, C, NH)
			NaiveAttentionForward(wout, watt, qkv, B, T, C, NH)
			checkClose(t, fmt.Sprintf("out %v", sh), out, wout, 1e-5)
			checkClose(t, fmt.Sprintf("att %v", sh), att, watt, 1e-5)
			dout := randSlice(rng, B*T*C, 1)
			dqkv := randSlice(rng, B*T*3*C, 1)
			want := append([]float32{}, dqkv...)
			AttentionBackward(dqkv, make([]float32, B*NH*T*T), dout, qkv, att, B, T, C, NH)
			NaiveAttentionBackward(want, dout, qkv, watt, B, T, C, NH)
			checkClose(t, fmt.Sprintf("dqkv %v", sh), dqkv, want, 1e-5*float64(T))
		}
	})
}

func TestCrossEntropyAgainstNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	N, V := 33, 257
	logits := randSlice(rng, N*V, 3)
	logits[5] = 80 // a large logit must not overflow
	targets := make([]int32, N)
	for i := range targets {
		targets[i] = int32(rng.IntN(V))
	}
	targets[3] = -1 // ignored
	losses, probs := make([]float32, N), make([]float32, N*V)
	wl, wp := make([]float32, N), make([]float32, N*V)
	mean := SoftmaxCrossEntropyForward(losses, probs, logits, targets, N, V)
	wmean := NaiveSoftmaxCrossEntropyForward(wl, wp, logits, targets, N, V)
	checkClose(t, "losses", losses, wl, 1e-5)
	checkClose(t, "probs", probs, wp, 1e-6)
	checkClose(t, "mean", []float32{mean}, []float32{wmean}, 1e-6)
	if losses[3] != 0 {
		t.Errorf("ignored position has loss %v, want 0", losses[3])
	}
	d := make([]float32, N*V)
	SoftmaxCrossEntropyBackward(d, probs, targets, 0.5, N, V)
	for i := 0; i < N; i++ {
		for j := 0; j < V; j++ {
			want := float32(0)
			if targets[i] >= 0 {
				want = 0.5 * wp[i*V+j]
				if int32(j) == targets[i] {
					want -= 0.5
				}
			}
			if math.Abs(float64(d[i*V+j]-want)) > 1e-6 {
				t.Fatalf("dlogits[%d,%d] = %v, want %v", i, j, d[i*V+j], want)
			}
		}
	}
}

// TestCrossEntropyIgnoredTargets: positions whose target is −1 (PyTorch's
// ignore_index) contribute nothing: the mean is the mean over the other
// positions alone, computed without them, and the backward pass adds
// nothing to their rows of dlogits; with every target ignored the mean is
// 0 and dlogits is untouched.
func TestCrossEntropyIgnoredTargets(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	N, V := 12, 37
	logits := randSlice(rng, N*V, 2)
	targets := make([]int32, N)
	var kept []int
	for i := range targets {
		targets[i] = int32(rng.IntN(V))
		if i%3 == 1 {
			targets[i] = -1
		} else {
			kept = append(kept, i)
		}
	}
	// The counted positions alone.
	n := len(kept)
	sub, subTargets := make([]float32, 0, n*V), make([]int32, 0, n)
	for _, i := range kept {
		sub, subTargets = append(sub, logits[i*V:(i+1)*V]...), append(subTargets, targets[i])
	}
	subProbs := make([]float32, n*V)
	want := SoftmaxCrossEntropyForward(make([]float32, n), subProbs, sub, subTargets, n, V)
	wantD := make([]float32, n*V)
	SoftmaxCrossEntropyBackward(wantD, subProbs, subTargets, 1/float32(n), n, V)

	probs := make([]float32, N*V)
	got := SoftmaxCrossEntropyForward(make([]float32, N), probs, logits, targets, N, V)
	if got != want {
		t.Errorf("mean with ignored targets %v, over the counted positions alone %v", got, want)
	}
	d := randSlice(rng, N*V, 1) // Backward adds: ignored rows must keep these values
	before := append([]float32{}, d...)
	SoftmaxCrossEntropyBackward(d, probs, targets, 1/float32(n), N, V)
	k := 0
	for i := range N {
		row, was := d[i*V:(i+1)*V], before[i*V:(i+1)*V]
		if targets[i] < 0 {
			for j := range row {
				if row[j] != was[j] {
					t.Fatalf("ignored position %d: dlogits[%d] changed from %v to %v", i, j, was[j], row[j])
				}
			}
			continue
		}
		for j := range row {
			if diff := float64(row[j] - was[j] - wantD[k*V+j]); !(math.Abs(diff) <= 1e-6) {
				t.Fatalf("position %d: dlogits[%d] gained %v, want %v", i, j, row[j]-was[j], wantD[k*V+j])
			}
		}
		k++
	}

	for i := range targets {
		targets[i] = -1
	}
	if got := SoftmaxCrossEntropyForward(make([]float32, N), probs, logits, targets, N, V); got != 0 {
		t.Errorf("every target ignored: mean %v, want 0", got)
	}
	copy(d, before)
	SoftmaxCrossEntropyBackward(d, probs, targets, 1, N, V)
	for i := range d {
		if d[i] != before[i] {
			t.Fatalf("every target ignored: dlogits[%d] changed", i)
		}
	}
}

func TestEncoderAndResidual(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	B, T, C, V := 2, 5, 8, 11
	tokens := []int32{1, 2, 1, 10, 0, 3, 3, 3, 4, 5}
	wte, wpe := randSlice(rng, V*C, 1), randSlice(rng, T*C, 1)
	out := make([]float32, B*T*C)
	EncoderForward(out, tokens, wte, wpe, B, T, C)
	for i, tok := range tokens {
		for c := 0; c < C; c++ {
			if want := wte[int(tok)*C+c] + wpe[(i%T)*C+c]; out[i*C+c] != want {
				t.Fatalf("encoded[%d,%d] = %v, want %v", i, c, out[i*C+c], want)
			}
		}
	}
	dout := randSlice(rng, B*T*C, 1)
	dwte, dwpe := make([]float32, V*C), make([]float32, T*C)
	EncoderBackward(dwte, dwpe, dout, tokens, B, T, C)
	wdte, wdpe := make([]float64, V*C), make([]float64, T*C)
	for i, tok := range tokens {
		for c := 0; c < C; c++ {
			wdte[int(tok)*C+c] += float64(dout[i*C+c])
			wdpe[(i%T)*C+c] += float64(dout[i*C+c])
		}
	}
	for i := range wdte {
		if math.Abs(float64(dwte[i])-wdte[i]) > 1e-6 {
			t.Fatalf("dwte[%d] = %v, want %v", i, dwte[i], wdte[i])
		}
	}
	for i := range wdpe {
		if math.Abs(float64(dwpe[i])-wdpe[i]) > 1e-6 {
			t.Fatalf("dwpe[%d] = %v, want %v", i, dwpe[i], wdpe[i])
		}
	}
	a, b := randSlice(rng, 20000, 1), randSlice(rng, 20000, 1)
	sum := make([]float32, len(a))
	ResidualForward(sum, a, b)
	for i := range a {
		if sum[i] != a[i]+b[i] {
			t.Fatalf("residual[%d] = %v, want %v", i, sum[i], a[i]+b[i])
		}
	}
	AddInto(a, b)
	for i := range a {
		if a[i] != sum[i] {
			t.Fatalf("AddInto[%d] = %v, want %v", i, a[i], sum[i])
		}
	}
}

func TestAdamWAndClipAgainstNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	n := 30000
	p, m, v := randSlice(rng, n, 1), make([]float32, n), make([]float32, n)
	wp, wm, wv := append([]float32{}, p...), make([]float32, n), make([]float32, n)
	hp := AdamWParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	for step := 1; step <= 5; step++ {
		g := randSlice(rng, n, 1)
		hp.Step = step
		AdamW(p, g, m, v, hp)
		NaiveAdamW(wp, g, wm, wv, hp)
	}
	checkClose(t, "params", p, wp, 1e-6)
	checkClose(t, "m", m, wm, 1e-6)
	checkClose(t, "v", v, wv, 1e-6)

	g := randSlice(rng, 50000, 1)
	want := NaiveGradNorm(g)
	for _, th := range []int{1, 0} {
		prev := SetThreads(th)
		if got := GradNorm(g); got != want && math.Abs(float64(got-want)) > 1e-6*float64(want) {
			t.Errorf("GradNorm threads=%d: %v, want %v", th, got, want)
		}
		SetThreads(prev)
	}
	// Thread-count independence is bitwise.
	prev := SetThreads(1)
	one := GradNorm(g)
	SetThreads(0)
	all := GradNorm(g)
	SetThreads(prev)
	if one != all {
		t.Errorf("GradNorm differs by thread count: %v vs %v", one, all)
	}
	norm := ClipGradNorm(g, 1)
	if after := NaiveGradNorm(g); math.Abs(float64(after)-1) > 1e-5 || norm != one {
		t.Errorf("after clipping norm %v (want 1); returned %v (want %v)", after, norm, one)
	}
}

// TestThreadCountInvariance: the backward kernels must give bitwise the same
// gradients with 1 thread and with all, so replicas with different core
// counts agree.
func TestThreadCountInvariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	BT, C, OC := 96, 64, 80
	inp, w, dout := randSlice(rng, BT*C, 1), randSlice(rng, OC*C, 1), randSlice(rng, BT*OC, 1)
	mean, rstd := make([]float32, BT), make([]float32, BT)
	run := func(th int) []float32 {
		prev := SetThreads(th)
		defer SetThreads(prev)
		di, dw, db := make([]float32, BT*C), make([]float32, OC*C), make([]float32, OC)
		LinearBackward(di, dw, db, dout, inp, w, BT, C, OC)
		out := make([]float32, BT*C)
		LayerNormForward(out, mean, rstd, inp, w[:C], w[C:2*C], BT, C)
		lw, lb := make([]float32, C), make([]float32, C)
		LayerNormBackward(out, lw, lb, inp, inp, w[:C], mean, rstd, BT, C)
		return append(append(append(append(append(di, dw...), db...), out...), lw...), lb...)
	}
	a, b := run(1), run(0)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("element %d: %v with 1 thread, %v with all", i, a[i], b[i])
		}
	}
}

func TestKernelsPanicOnShortBuffers(t *testing.T) {
	for name, f := range map[string]func(){
		"linear": func() { LinearForward(make([]float32, 3), make([]float32, 4), make([]float32, 4), nil, 2, 2, 2) },
		"layernorm": func() {
			LayerNormForward(make([]float32, 4), make([]float32, 1), make([]float32, 2), make([]float32, 4), make([]float32, 2), make([]float32, 2), 2, 2)
		},
		"attention": func() { AttentionForward(make([]float32, 8), make([]float32, 8), make([]float32, 23), 1, 2, 4, 2) },
		"heads":     func() { AttentionForward(make([]float32, 8), make([]float32, 8), make([]float32, 24), 1, 2, 4, 3) },
		"target": func() {
			SoftmaxCrossEntropyForward(make([]float32, 1), make([]float32, 2), make([]float32, 2), []int32{2}, 1, 2)
		},
		"token": func() {
			EncoderForward(make([]float32, 2), []int32{5}, make([]float32, 4), make([]float32, 2), 1, 1, 2)
		},
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
