//go:build !amd64 || purego

package kernels

func expSumAVX512(dst, src *float32, n int, sub, scale float32, sums *[16]float32) {
	panic("kernels: AVX-512 is not compiled in")
}

func geluFwdAVX512(out, in *float32, n int)        { panic("kernels: AVX-512 is not compiled in") }
func geluBwdAVX512(dinp, in, dout *float32, n int) { panic("kernels: AVX-512 is not compiled in") }
