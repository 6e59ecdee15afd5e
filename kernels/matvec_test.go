package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// LinearForwardFew computes what the naive linear layer does, with and
// without a bias, for the few-row shapes of decoding (dimensions that are
// and are not multiples of its eight running sums).
func TestLinearForwardFewAgainstNaive(t *testing.T) {
	forEachConfig(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, sh := range [][3]int{{1, 1, 1}, {1, 13, 5}, {3, 48, 144}, {8, 96, 33}, {2, 768, 300}} {
			BT, C, OC := sh[0], sh[1], sh[2]
			inp, w, b := randSlice(rng, BT*C, 1), randSlice(rng, OC*C, 0.5), randSlice(rng, OC, 0.5)
			got, want := make([]float32, BT*OC), make([]float32, BT*OC)
			LinearForwardFew(got, inp, w, b, BT, C, OC)
			NaiveLinearForward(want, inp, w, b, BT, C, OC)
			checkClose(t, fmt.Sprintf("out %v", sh), got, want, 1e-5*float64(C))
			LinearForwardFew(got, inp, w, nil, BT, C, OC)
			NaiveLinearForward(want, inp, w, nil, BT, C, OC)
			checkClose(t, fmt.Sprintf("out nobias %v", sh), got, want, 1e-5*float64(C))
		}
	})
}
