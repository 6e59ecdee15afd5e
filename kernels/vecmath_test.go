package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestExpSumEveryImpl checks ExpSum, GELU forward and backward of every Impl
// against float64 math, for lengths around the 16-lane vector width so that
// the masked tails run.
func TestVecMathEveryImpl(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, impl := range Implementations() {
		t.Run(impl.String(), func(t *testing.T) {
			defer SetImpl(SetImpl(impl))
			for _, n := range []int{1, 5, 15, 16, 17, 31, 32, 33, 100, 1000} {
				src := randSlice(rng, n, 8)
				dst := make([]float32, n)
				sum := ExpSum(dst, src, 1.5, 0.7)
				var want float64
				for i, v := range src {
					e := math.Exp(float64((v - 1.5) * 0.7)) // the float32 argument both paths compute
					want += e
					if d := math.Abs(float64(dst[i])-e) / e; d > 5e-7 {
						t.Fatalf("n=%d: exp[%d] = %v, want %v (rel %.2g)", n, i, dst[i], e, d)
					}
				}
				if d := math.Abs(float64(sum)-want) / want; d > 1e-5 {
					t.Fatalf("n=%d: sum %v, want %v", n, sum, want)
				}
				got, ref := make([]float32, n), make([]float32, n)
				GeluForward(got, src)
				NaiveGeluForward(ref, src)
				checkClose(t, fmt.Sprintf("gelu n=%d", n), got, ref, 1e-6)
				dout := randSlice(rng, n, 1)
				gd, rd := make([]float32, n), make([]float32, n)
				copy(gd, dout)
				copy(rd, dout) // accumulate onto non-zero values
				GeluBackward(gd, src, dout)
				NaiveGeluBackward(rd, src, dout)
				checkClose(t, fmt.Sprintf("gelu backward n=%d", n), gd, rd, 1e-6)
			}
			// Saturation, zero and NaN behave.
			in := []float32{-1000, -90, 0, 90, 1000, float32(math.Inf(-1)), float32(math.NaN())}
			out := make([]float32, len(in))
			ExpSum(out, in, 0, 1)
			if out[0] > 1e-37 || out[1] > 1e-37 || out[2] != 1 || !math.IsInf(float64(out[3]), 1) ||
				!math.IsInf(float64(out[4]), 1) || out[5] > 1e-37 || !math.IsNaN(float64(out[6])) {
				t.Errorf("special values: exp(%v) = %v", in, out)
			}
		})
	}
}
