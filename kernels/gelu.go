package kernels

import "math"

// geluC is sqrt(2/π), and geluK the cubic coefficient of GPT-2's tanh
// approximation GELU(x) = ½x(1 + tanh(geluC·(x + geluK·x³))).
const (
	geluC = 0.7978845608028654
	geluK = 0.044715
)

// GeluForward computes out = GELU(inp) elementwise with the tanh
// approximation (PyTorch's approximate="tanh"). out and inp have the same
// length and may be the same slice.
//
// It uses ½(1 + tanh(u)) = 1/(1 + e^(−2u)), which avoids the cancellation of
// 1 + tanh(u) for negative u, and Exp32 instead of math.Tanh.
func GeluForward(out, inp []float32) {
	need("GeluForward out", out, len(inp))
	geluFwdTasks.run(len(inp), 4096, geluTask{out: out, inp: inp})
}

// GeluBackward adds dout·GELU'(inp) into dinp. All three have the same length.
func GeluBackward(dinp, inp, dout []float32) {
	need("GeluBackward dinp", dinp, len(inp))
	need("GeluBackward dout", dout, len(inp))
	geluBwdTasks.run(len(inp), 4096, geluBwdTask{out: dinp, inp: inp, dout: dout})
}

type geluTask struct{ out, inp, dout []float32 }

// geluBwdTask shares geluTask's fields; Run differs.
type geluBwdTask geluTask

var (
	geluFwdTasks taskPool[geluTask, *geluTask]
	geluBwdTasks taskPool[geluBwdTask, *geluBwdTask]
)

func (t *geluTask) Run(lo, hi int) { geluForward(t.out[lo:hi], t.inp[lo:hi]) }

func (t *geluBwdTask) Run(lo, hi int) { geluBackward(t.out[lo:hi], t.inp[lo:hi], t.dout[lo:hi]) }

// Exp32 returns e^x in float32, within about 2 ulp of the true value over
// the normal range. It saturates to +Inf above about 88.7 and flushes to 0
// below about −87.3 (no subnormal results), and propagates NaN. It is written
// so that the compiler keeps it branch-light and call-free: rounding uses the
// 1.5·2²³ trick instead of math.Floor.
func Exp32(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693359375 // few significant bits, so n·ln2hi is exact
		ln2lo = -2.12194440e-4
		round = 12582912 // 1.5·2²³: adding it rounds a float32 to an integer
	)
	if !(x <= 88.72) { // also catches NaN
		if x != x {
			return x
		}
		return float32(math.Inf(1))
	}
	if x < -87.33 {
		return 0
	}
	// x = n·ln2 + r with |r| ≤ ln2/2; e^x = 2^n·e^r.
	fn := (x*log2e + round) - round
	r := x - fn*ln2hi
	r -= fn * ln2lo
	// Degree-6 Taylor polynomial of e^r, Horner form; truncation error
	// < r^7/7! ≈ 1.2e-7 relative at |r| = 0.347.
	p := float32(1.0 / 720)
	p = p*r + 1.0/120
	p = p*r + 1.0/24
	p = p*r + 1.0/6
	p = p*r + 0.5
	p = p*r + 1
	p = p*r + 1
	n := int32(fn)
	if n > 127 { // 2^128 is not a float32; take one factor of 2 into p
		p *= 2
		n--
	}
	return p * math.Float32frombits(uint32(n+127)<<23)
}
