package kernels

// Vector math used by softmax and GELU: an AVX-512 path (vecmath_amd64.s),
// taken when ActiveImpl is ImplAVX512, and the pure-Go path below, which is
// what every other Impl uses. Both round differently (the assembly uses
// FMA), so results agree within a few ulp, not bitwise.

// ExpSum sets dst[i] = e^((src[i]−sub)·scale) for every i and returns the
// sum of dst. dst and src have the same length and may be the same slice.
func ExpSum(dst, src []float32, sub, scale float32) float32 {
	n := len(src)
	need("ExpSum dst", dst, n)
	if n == 0 {
		return 0
	}
	if ActiveImpl() == ImplAVX512 {
		var sums [16]float32
		expSumAVX512(&dst[0], &src[0], n, sub, scale, &sums)
		var s float32
		for _, v := range sums {
			s += v
		}
		return s
	}
	var s float32
	for i, v := range src[:n] {
		e := Exp32((v - sub) * scale)
		dst[i] = e
		s += e
	}
	return s
}

// geluForward is GeluForward on one chunk.
func geluForward(out, in []float32) {
	if len(in) == 0 {
		return
	}
	if ActiveImpl() == ImplAVX512 {
		geluFwdAVX512(&out[0], &in[0], len(in))
		return
	}
	out = out[:len(in)]
	for i, x := range in {
		u := geluC * (x + geluK*x*x*x)
		out[i] = x / (1 + Exp32(-2*u))
	}
}

// geluBackward is GeluBackward on one chunk.
func geluBackward(dinp, in, dout []float32) {
	if len(in) == 0 {
		return
	}
	if ActiveImpl() == ImplAVX512 {
		geluBwdAVX512(&dinp[0], &in[0], &dout[0], len(in))
		return
	}
	dinp, dout = dinp[:len(in)], dout[:len(in)]
	for i, x := range in {
		u := geluC * (x + geluK*x*x*x)
		s := 1 / (1 + Exp32(-2*u)) // ½(1 + tanh u)
		du := geluC * (1 + 3*geluK*x*x)
		// d/dx [x·s(2u)] = s + x·2s(1−s)·u'
		dinp[i] += dout[i] * (s + 2*x*s*(1-s)*du)
	}
}
