package train_test

import "math"

// far reports whether got is further than tol from want, or either is NaN
// or infinite: a comparison written as `math.Abs(got-want) > tol` is false
// for NaN, and a test using it passes on a NaN result.
func far(got, want, tol float64) bool {
	return !(math.Abs(got-want) <= tol) || math.IsInf(got, 0) || math.IsInf(want, 0)
}

// worse is the larger of worst and d, NaN if either is (math.Max does the
// same; spelt out so that a NaN is never dropped by a running maximum).
func worse(worst, d float64) float64 {
	if math.IsNaN(worst) || math.IsNaN(d) {
		return math.NaN()
	}
	return max(worst, d)
}
