package kernels

import (
	"math/rand/v2"
	"slices"
	"time"
)

// BenchGemm times C = A·B for n×n row-major matrices (no transposes, no
// accumulation) with the current Impl and Threads, and returns GFLOPS
// (2n³ floating-point operations per product) as the median over repeated
// timed batches. One product runs first as a warm-up and is not counted; the
// timed batches together last at least minDur. The matrices come from a
// fixed seed, so runs are repeatable. It allocates three n×n matrices and
// is meant for `braid bench` and benchmarks, not for use during training.
func BenchGemm(n int, minDur time.Duration) float64 {
	if n <= 0 {
		panic("kernels: BenchGemm: n must be positive")
	}
	rng := rand.New(rand.NewPCG(0x6265, 0x6e63))
	a, b, c := make([]float32, n*n), make([]float32, n*n), make([]float32, n*n)
	for i := range a {
		a[i] = 2*rng.Float32() - 1
		b[i] = 2*rng.Float32() - 1
	}
	run := func() { Gemm(false, false, n, n, n, a, n, b, n, c, n, false) }

	start := time.Now()
	run() // warm-up: packing buffers, worker pool, caches
	once := time.Since(start)

	// Batch enough products to take about minDur/10 per sample, so that at
	// least ten samples fit in minDur (at least three samples in all).
	const samples = 10
	per := max(1, int(minDur/samples/max(once, time.Nanosecond)))
	flops := 2 * float64(n) * float64(n) * float64(n) * float64(per)
	var rates []float64
	var total time.Duration
	for len(rates) < 3 || total < minDur {
		t0 := time.Now()
		for i := 0; i < per; i++ {
			run()
		}
		d := time.Since(t0)
		total += d
		rates = append(rates, flops/d.Seconds()/1e9)
	}
	slices.Sort(rates)
	return rates[len(rates)/2]
}
