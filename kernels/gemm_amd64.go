//go:build amd64 && !purego

package kernels

//go:generate go run gemm_asmgen.go

// The assembly micro-kernels and packing routines (gemm_amd64.s, generated
// by gemm_asmgen.go). The kernels are gemmKernelFuncs; they check nothing,
// gemmConfig.macro guarantees their preconditions.

// gemmKernel8x32AVX512 is the AVX-512F gemmKernelFunc for mr = 8, nr = 32:
// 16 zmm accumulators, two zmm of B and one broadcast of A per row per k
// step, unrolled four k steps deep.
//
//go:noescape
func gemmKernel8x32AVX512(kc int, a, b, c []float32, ldc int, add bool)

// gemmKernel6x16AVX2 is the AVX2+FMA gemmKernelFunc for mr = 6, nr = 16:
// 12 ymm accumulators, two ymm of B and one broadcast of A per row per k
// step, unrolled four k steps deep.
//
//go:noescape
func gemmKernel6x16AVX2(kc int, a, b, c []float32, ldc int, add bool)

// packTrans4AVX packs 4 rows of a transposed block: d[p*r+i] = s[i*ld+p]
// for i < 4 and p < kc rounded down to a multiple of 8. It needs AVX and
// len(d) ≥ (kc−1)·r + 4, len(s) ≥ 3·ld + kc; packTrans checks.
//
//go:noescape
func packTrans4AVX(d, s []float32, ld, kc, r int)

// packCopyAVX packs a full panel whose k steps are contiguous:
// d[p*r+j] = s[p*ld+j] for p < kc, j < r. It needs AVX, r a multiple of 4,
// len(d) ≥ kc·r and len(s) ≥ (kc−1)·ld + r; packCopy checks.
//
//go:noescape
func packCopyAVX(d, s []float32, ld, kc, r int)

// gemmAVX512 is tuned on an AMD EPYC Zen 5 (48 KiB L1d, 1 MiB L2 per core):
// the 8×kc A panel (10 KiB) stays in L1, the kc×nc packed block of B
// (640 KiB) in L2, and the mc×kc packed block of A (1.2 MiB) in L3. An 8×32
// tile ran as fast as 12×32, 14×32, 8×48 and 6×64 on large products and
// 10–15% faster on small ones (attention's 64-row blocks waste nothing on
// it); the other block sizes tried (kc 256…512, nc 256…1024, mc 600…2400)
// were within measurement noise of each other.
var gemmAVX512 = gemmConfig{
	mr: 8, nr: 32,
	mc: 960, kc: 320, nc: 512,
	kernel:        gemmKernel8x32AVX512,
	packTrans4Vec: packTrans4AVX,
	packCopyVec:   packCopyAVX,
}

// gemmAVX2 uses the same cache blocking with the classic 6×16 AVX2 tile.
var gemmAVX2 = gemmConfig{
	mr: 6, nr: 16,
	mc: 960, kc: 320, nc: 512,
	kernel:        gemmKernel6x16AVX2,
	packTrans4Vec: packTrans4AVX,
	packCopyVec:   packCopyAVX,
}

// archGemmConfig returns the configuration of an assembly Impl, or nil for
// ImplGeneric.
func archGemmConfig(i Impl) *gemmConfig {
	switch i {
	case ImplAVX512:
		return &gemmAVX512
	case ImplAVX2:
		return &gemmAVX2
	}
	return nil
}
