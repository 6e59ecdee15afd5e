package kernels

// LinearForwardFew is LinearForward for a few rows (a decoding step: one
// row per sequence): out = inp·weightᵀ + bias, with each weight row read
// once for all BT rows and nothing packed. Gemm packs the whole weight
// before it multiplies, which for one row costs more than the multiply; a
// weight row times a few input rows is a few dot products, memory-bound
// on reading the weight once. Results agree with LinearForward's within
// float32 rounding (the sums are in another order). Shapes are
// LinearForward's; BT should be small (up to 8 or so), else LinearForward
// is faster.
func LinearForwardFew(out, inp, weight, bias []float32, BT, C, OC int) {
	need("LinearForwardFew out", out, BT*OC)
	need("LinearForwardFew inp", inp, BT*C)
	need("LinearForwardFew weight", weight, OC*C)
	if bias != nil {
		need("LinearForwardFew bias", bias, OC)
	}
	matVecTasks.run(OC, grainFor(BT*C), matVecTask{out: out, inp: inp, w: weight, b: bias, BT: BT, C: C, OC: OC})
}

type matVecTask struct {
	out, inp, w, b []float32
	BT, C, OC      int
}

var matVecTasks taskPool[matVecTask, *matVecTask]

// Run computes output features [lo, hi) of every row.
func (t *matVecTask) Run(lo, hi int) {
	C := t.C
	simd := ActiveImpl() != ImplGeneric // AVX2 is a subset of AVX-512
	for o := lo; o < hi; o++ {
		w := t.w[o*C : (o+1)*C]
		var bias float32
		if t.b != nil {
			bias = t.b[o]
		}
		for r := range t.BT {
			x := t.inp[r*C : (r+1)*C]
			if simd && C >= 32 {
				n := C &^ 31
				t.out[r*t.OC+o] = bias + dotAVX2(&x[0], &w[0], n) + dot(x[n:], w[n:])
				continue
			}
			t.out[r*t.OC+o] = bias + dot(x, w)
		}
	}
}

// dot is Σ a[i]·b[i] over len(a) ≤ len(b), in eight running sums so that
// the additions do not wait on each other.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		x, y := a[i:i+8:i+8], b[i:i+8:i+8]
		s0 += x[0] * y[0]
		s1 += x[1] * y[1]
		s2 += x[2] * y[2]
		s3 += x[3] * y[3]
		s4 += x[4] * y[4]
		s5 += x[5] * y[5]
		s6 += x[6] * y[6]
		s7 += x[7] * y[7]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}
