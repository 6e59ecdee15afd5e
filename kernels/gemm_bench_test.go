package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkGemm measures C = A·B for n×n matrices by Impl, size and thread
// count, in GFLOPS (2n³ per product). Compare runs with benchstat.
func BenchmarkGemm(b *testing.B) {
	for _, impl := range Implementations() {
		for _, n := range []int{256, 512, 1024, 2048} {
			if impl == ImplGeneric && n > 1024 {
				continue // minutes per product, and says nothing new
			}
			for _, threads := range benchThreads() {
				b.Run(fmt.Sprintf("%v/n=%d/threads=%d", impl, n, threads), func(b *testing.B) {
					benchGemmShape(b, impl, threads, Gemm, false, false, n, n, n)
				})
			}
		}
	}
}

// BenchmarkGemmShapes measures the products a GPT-2-small training step
// makes (B·T = 2048, C = 384 here): the linear layers forward (A·Wᵀ) and
// backward (dout·W, doutᵀ·inp), and one attention head (T = 256, hs = 32).
func BenchmarkGemmShapes(b *testing.B) {
	shapes := []struct {
		name           string
		transA, transB bool
		m, n, k        int
	}{
		{"fwd-qkv", false, true, 2048, 1152, 384},
		{"fwd-proj", false, true, 2048, 384, 384},
		{"fwd-fc", false, true, 2048, 1536, 384},
		{"bwd-dinp", false, false, 2048, 384, 1536},
		{"bwd-dweight", true, false, 384, 1536, 2048},
		{"2048x384x128", false, false, 2048, 384, 128},
		{"2048x128x512", false, false, 2048, 128, 512},
		{"256x256x32", false, true, 256, 256, 32},
		{"256x32x256", false, false, 256, 32, 256},
	}
	impl := Detect()
	for _, s := range shapes {
		for _, threads := range benchThreads() {
			b.Run(fmt.Sprintf("%s/threads=%d", s.name, threads), func(b *testing.B) {
				benchGemmShape(b, impl, threads, Gemm, s.transA, s.transB, s.m, s.n, s.k)
			})
		}
	}
}

// BenchmarkGemmSerialAttention measures the GemmSerial calls attention
// makes per (batch, head) and 64-row block, for T = 256 and head size 64.
func BenchmarkGemmSerialAttention(b *testing.B) {
	shapes := []struct {
		name           string
		transA, transB bool
		m, n, k        int
	}{
		{"scores", false, true, 64, 256, 64}, // q·kᵀ
		{"out", false, false, 64, 64, 256},   // att·v
		{"dkdv", true, false, 64, 64, 256},   // dsᵀ·q, attᵀ·dout
	}
	for _, impl := range Implementations() {
		for _, s := range shapes {
			b.Run(fmt.Sprintf("%v/%s", impl, s.name), func(b *testing.B) {
				benchGemmShape(b, impl, 1, GemmSerial, s.transA, s.transB, s.m, s.n, s.k)
			})
		}
	}
}

func benchThreads() []int {
	if all := Threads(); all > 1 {
		return []int{1, all}
	}
	return []int{1}
}

func benchGemmShape(b *testing.B, impl Impl, threads int,
	gemm func(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool),
	transA, transB bool, m, n, k int) {
	restore := gemmVariant{impl, threads}.use()
	defer restore()
	rng := rand.New(rand.NewPCG(1, 1))
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	a, bm, c := randMatrix(rng, m, k), randMatrix(rng, k, n), make([]float32, m*n)
	gemm(transA, transB, m, n, k, a, lda, bm, ldb, c, n, false)
	b.ResetTimer()
	for b.Loop() {
		gemm(transA, transB, m, n, k, a, lda, bm, ldb, c, n, false)
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(2*float64(m)*float64(n)*float64(k)/sec/1e9, "GFLOPS")
}
