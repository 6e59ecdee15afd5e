//go:build !amd64 || purego

package kernels

func dotAVX2(a, b *float32, n int) float32 { panic("kernels: AVX2 is not compiled in") }
