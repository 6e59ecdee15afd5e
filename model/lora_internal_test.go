package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestDropoutTaskMatchesDefinition: the unrolled dropout kernel gives
// exactly the mask of its definition (lane e mod 4 of the hash of ⌊e/4⌋)
// for any row width, aligned to 4 or not, and drops about p of the
// elements, scaling the rest by 1/(1 − q/2¹⁶).
func TestDropoutTaskMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, c := range []struct {
		B, T, in int
		p        float64
	}{{2, 3, 5, 0.3}, {3, 7, 8, 0.1}, {1, 64, 192, 0.05}, {2, 5, 1, 0.5}, {1, 33, 7, 0.9}} {
		n := c.B * c.T * c.in
		src, dst := make([]float32, n), make([]float32, n)
		for i := range src {
			src[i] = float32(rng.NormFloat64()) + 3 // never zero
		}
		keys := make([]uint64, c.B)
		for b := range keys {
			keys[b] = dropoutRowKey(DropoutStream(1, 2, uint64(b)), 1, projFC)
		}
		q, scale := dropoutLanes(c.p)
		task := &dropoutTask{dst: dst, src: src, keys: keys, T: c.T, in: c.in, thresh: q, scale: scale}
		task.Run(0, c.B*c.T)
		dropped := 0
		for i := range src {
			b, e := i/(c.T*c.in), uint64(i%(c.T*c.in))
			h := mix64(keys[b] + (e/4+1)*golden)
			f := scale
			if uint16(h>>(16*(e%4))) < q {
				f, dropped = 0, dropped+1
			}
			want := src[i] * f // −0 for a dropped negative, as x·0 is
			if math.Float32bits(dst[i]) != math.Float32bits(want) {
				t.Fatalf("B=%d T=%d in=%d: element %d is %v, want %v", c.B, c.T, c.in, i, dst[i], want)
			}
		}
		rate := float64(dropped) / float64(n)
		t.Logf("B=%d T=%d in=%d p=%.2f: dropped %.3f of %d", c.B, c.T, c.in, c.p, rate, n)
		if sd := math.Sqrt(c.p * (1 - c.p) / float64(n)); math.Abs(rate-c.p) > 5*sd+1e-9 {
			t.Errorf("dropped %.4f, want %.2f ± %.4f", rate, c.p, 5*sd)
		}
	}
	if q, s := dropoutLanes(0); q != 0 || s != 1 {
		t.Errorf("p = 0: q %d scale %v, want nothing dropped", q, s)
	}
}
