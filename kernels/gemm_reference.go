package kernels

// NaiveGemm is the reference for Gemm: the textbook triple loop, with the
// same arguments, shape checks and panics. Each element of C is one float32
// sum over k in increasing order, started from zero, and then stored or
// added to C; every product is rounded to float32 before it is added (no
// fused multiply-add), so the result is the same on every architecture. It
// is deliberately simple and slow, for tests only.
func NaiveGemm(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	checkGemm("NaiveGemm", transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var sum float32
			for p := 0; p < k; p++ {
				var av, bv float32 // op(A)[i][p], op(B)[p][j]
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				sum += float32(av * bv)
			}
			if accumulate {
				c[i*ldc+j] += sum
			} else {
				c[i*ldc+j] = sum
			}
		}
	}
}
