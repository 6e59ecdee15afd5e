//go:build amd64 && !purego

package kernels

// dotAVX2 is Σ a[i]·b[i] over n floats, n a multiple of 32 (AVX2 + FMA3).
//
//go:noescape
func dotAVX2(a, b *float32, n int) float32
