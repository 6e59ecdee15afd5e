//go:build amd64 && !purego

package kernels

//go:noescape
func expSumAVX512(dst, src *float32, n int, sub, scale float32, sums *[16]float32)

//go:noescape
func geluFwdAVX512(out, in *float32, n int)

//go:noescape
func geluBwdAVX512(dinp, in, dout *float32, n int)
