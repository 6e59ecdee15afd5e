package kernels

import "runtime"

// gemmGeneric is the pure-Go implementation, used for ImplGeneric and on
// machines or builds without the assembly kernels. Its tile is as large as
// the compiler can keep in registers: 4×4 where there are 32 floating-point
// registers (arm64 and most others), 2×4 on amd64 and 386, whose 16 would
// spill the 4×4 tile's accumulators (2×4 ran at 7.7 GFLOPS against 4.1 for
// 4×4 on a Zen 5).
var gemmGeneric = genericGemmConfig(runtime.GOARCH)

func genericGemmConfig(goarch string) gemmConfig {
	g := gemmConfig{
		mr: 4, nr: 4,
		mc: 256, kc: 256, nc: 1024,
		kernel: gemmKernel4x4Generic,
	}
	if goarch == "amd64" || goarch == "386" {
		g.mr, g.kernel = 2, gemmKernel2x4Generic
	}
	return g
}

// gemmKernel4x4Generic is a gemmKernelFunc for mr = nr = 4.
func gemmKernel4x4Generic(kc int, a, b, c []float32, ldc int, add bool) {
	var c00, c01, c02, c03 float32
	var c10, c11, c12, c13 float32
	var c20, c21, c22, c23 float32
	var c30, c31, c32, c33 float32
	a, b = a[:4*kc], b[:4*kc]
	for len(a) >= 4 && len(b) >= 4 {
		a0, a1, a2, a3 := a[0], a[1], a[2], a[3]
		b0, b1, b2, b3 := b[0], b[1], b[2], b[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
		a, b = a[4:], b[4:]
	}
	r0 := c[:4]
	r1 := c[ldc:][:4]
	r2 := c[2*ldc:][:4]
	r3 := c[3*ldc:][:4]
	if add {
		r0[0], r0[1], r0[2], r0[3] = r0[0]+c00, r0[1]+c01, r0[2]+c02, r0[3]+c03
		r1[0], r1[1], r1[2], r1[3] = r1[0]+c10, r1[1]+c11, r1[2]+c12, r1[3]+c13
		r2[0], r2[1], r2[2], r2[3] = r2[0]+c20, r2[1]+c21, r2[2]+c22, r2[3]+c23
		r3[0], r3[1], r3[2], r3[3] = r3[0]+c30, r3[1]+c31, r3[2]+c32, r3[3]+c33
		return
	}
	r0[0], r0[1], r0[2], r0[3] = c00, c01, c02, c03
	r1[0], r1[1], r1[2], r1[3] = c10, c11, c12, c13
	r2[0], r2[1], r2[2], r2[3] = c20, c21, c22, c23
	r3[0], r3[1], r3[2], r3[3] = c30, c31, c32, c33
}

// gemmKernel2x4Generic is a gemmKernelFunc for mr = 2, nr = 4.
func gemmKernel2x4Generic(kc int, a, b, c []float32, ldc int, add bool) {
	var c00, c01, c02, c03 float32
	var c10, c11, c12, c13 float32
	a, b = a[:2*kc], b[:4*kc]
	for len(a) >= 2 && len(b) >= 4 {
		a0, a1 := a[0], a[1]
		b0, b1, b2, b3 := b[0], b[1], b[2], b[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		a, b = a[2:], b[4:]
	}
	r0 := c[:4]
	r1 := c[ldc:][:4]
	if add {
		r0[0], r0[1], r0[2], r0[3] = r0[0]+c00, r0[1]+c01, r0[2]+c02, r0[3]+c03
		r1[0], r1[1], r1[2], r1[3] = r1[0]+c10, r1[1]+c11, r1[2]+c12, r1[3]+c13
		return
	}
	r0[0], r0[1], r0[2], r0[3] = c00, c01, c02, c03
	r1[0], r1[1], r1[2], r1[3] = c10, c11, c12, c13
}
