//go:build ignore

// gemm_asmgen.go writes gemm_amd64.s, the AVX-512 and AVX2 micro-kernels.
// The kernels are fully unrolled register tiles, so writing them by hand
// would mean several hundred near-identical lines; generating them keeps the
// register assignment in one place. Run it with `go generate ./kernels`.
package main

import (
	"bytes"
	"fmt"
	"log"
	"os"
)

var out bytes.Buffer

func p(format string, args ...any) { fmt.Fprintf(&out, format+"\n", args...) }

// Every micro-kernel has the Go signature
//
//	func(kc int, a, b, c []float32, ldc int, add bool)
//
// a holds an MR×kc packed panel of op(A) (MR values per k step), b a kc×NR
// packed panel of op(B) (NR values per k step), and c an MR×NR tile with row
// stride ldc (elements). With add the product is added to c, otherwise it
// overwrites c.
const (
	frameSize = "$0-89"
	argKC     = "kc+0(FP)"
	argA      = "a_base+8(FP)"
	argB      = "b_base+32(FP)"
	argC      = "c_base+56(FP)"
	argLDC    = "ldc+80(FP)"
	argAdd    = "add+88(FP)"
)

// avx512 writes the 12×32 AVX-512F kernel: 24 zmm accumulators (two per
// row of C), the two B vectors of a k step in Z24/Z25 (Z26/Z27 on odd steps)
// and, per row, one embedded-broadcast FMA per B vector.
func avx512(name string, mr, unroll int, bcastReg bool) {
	const nr = 32
	acc := func(i, j int) string { return fmt.Sprintf("Z%d", 2*i+j) }
	p("// func %s(kc int, a, b, c []float32, ldc int, add bool)", name)
	p("TEXT ·%s(SB), NOSPLIT, %s", name, frameSize)
	p("\tMOVQ %s, CX", argKC)
	p("\tMOVQ %s, SI", argA)
	p("\tMOVQ %s, DI", argB)
	p("\tMOVQ %s, DX", argC)
	p("\tMOVQ %s, R8", argLDC)
	p("\tSHLQ $2, R8")
	// Prefetch the C tile; it is read (add) or written only after the k loop.
	p("\tMOVQ DX, R9")
	for i := 0; i < mr; i++ {
		p("\tPREFETCHT0 (R9)")
		p("\tPREFETCHT0 64(R9)")
		p("\tPREFETCHT0 124(R9)")
		if i < mr-1 {
			p("\tADDQ R8, R9")
		}
	}
	for i := 0; i < mr; i++ {
		for j := 0; j < 2; j++ {
			p("\tVPXORD %s, %[1]s, %[1]s", acc(i, j))
		}
	}
	step := func(u int) {
		b0, b1 := "Z24", "Z25"
		if u%2 == 1 {
			b0, b1 = "Z26", "Z27"
		}
		p("\tVMOVUPS %d(DI), %s", u*nr*4, b0)
		p("\tVMOVUPS %d(DI), %s", u*nr*4+64, b1)
		for i := 0; i < mr; i++ {
			off := (u*mr + i) * 4
			if bcastReg {
				r := fmt.Sprintf("Z%d", 28+i%4)
				p("\tVBROADCASTSS %d(SI), %s", off, r)
				p("\tVFMADD231PS %s, %s, %s", r, b0, acc(i, 0))
				p("\tVFMADD231PS %s, %s, %s", r, b1, acc(i, 1))
				continue
			}
			p("\tVFMADD231PS.BCST %d(SI), %s, %s", off, b0, acc(i, 0))
			p("\tVFMADD231PS.BCST %d(SI), %s, %s", off, b1, acc(i, 1))
		}
	}
	p("\tCMPQ CX, $%d", unroll)
	p("\tJB %s_tail", name)
	p("%s_loop:", name)
	for u := 0; u < unroll; u++ {
		step(u)
	}
	p("\tADDQ $%d, SI", unroll*mr*4)
	p("\tADDQ $%d, DI", unroll*nr*4)
	p("\tSUBQ $%d, CX", unroll)
	p("\tCMPQ CX, $%d", unroll)
	p("\tJAE %s_loop", name)
	p("%s_tail:", name)
	p("\tTESTQ CX, CX")
	p("\tJZ %s_done", name)
	step(0)
	p("\tADDQ $%d, SI", mr*4)
	p("\tADDQ $%d, DI", nr*4)
	p("\tDECQ CX")
	p("\tJMP %s_tail", name)
	p("%s_done:", name)
	p("\tMOVBLZX %s, AX", argAdd)
	p("\tTESTL AX, AX")
	p("\tJZ %s_store", name)
	for i := 0; i < mr; i++ {
		p("\tVADDPS (DX), %s, %[1]s", acc(i, 0))
		p("\tVADDPS 64(DX), %s, %[1]s", acc(i, 1))
		p("\tVMOVUPS %s, (DX)", acc(i, 0))
		p("\tVMOVUPS %s, 64(DX)", acc(i, 1))
		if i < mr-1 {
			p("\tADDQ R8, DX")
		}
	}
	p("\tVZEROUPPER")
	p("\tRET")
	p("%s_store:", name)
	for i := 0; i < mr; i++ {
		p("\tVMOVUPS %s, (DX)", acc(i, 0))
		p("\tVMOVUPS %s, 64(DX)", acc(i, 1))
		if i < mr-1 {
			p("\tADDQ R8, DX")
		}
	}
	p("\tVZEROUPPER")
	p("\tRET")
	p("")
}

// avx2 writes the 6×16 AVX2+FMA kernel: 12 ymm accumulators (two per row),
// the two B vectors of a k step in Y12/Y13 and broadcasts of A alternating
// between Y14 and Y15.
func avx2(name string, unroll int) {
	const mr, nr = 6, 16
	acc := func(i, j int) string { return fmt.Sprintf("Y%d", 2*i+j) }
	p("// func %s(kc int, a, b, c []float32, ldc int, add bool)", name)
	p("TEXT ·%s(SB), NOSPLIT, %s", name, frameSize)
	p("\tMOVQ %s, CX", argKC)
	p("\tMOVQ %s, SI", argA)
	p("\tMOVQ %s, DI", argB)
	p("\tMOVQ %s, DX", argC)
	p("\tMOVQ %s, R8", argLDC)
	p("\tSHLQ $2, R8")
	for i := 0; i < mr; i++ {
		for j := 0; j < 2; j++ {
			p("\tVXORPS %s, %[1]s, %[1]s", acc(i, j))
		}
	}
	step := func(u int) {
		p("\tVMOVUPS %d(DI), Y12", u*nr*4)
		p("\tVMOVUPS %d(DI), Y13", u*nr*4+32)
		for i := 0; i < mr; i++ {
			bc := "Y14"
			if i%2 == 1 {
				bc = "Y15"
			}
			p("\tVBROADCASTSS %d(SI), %s", (u*mr+i)*4, bc)
			p("\tVFMADD231PS Y12, %s, %s", bc, acc(i, 0))
			p("\tVFMADD231PS Y13, %s, %s", bc, acc(i, 1))
		}
	}
	p("\tCMPQ CX, $%d", unroll)
	p("\tJB %s_tail", name)
	p("%s_loop:", name)
	for u := 0; u < unroll; u++ {
		step(u)
	}
	p("\tADDQ $%d, SI", unroll*mr*4)
	p("\tADDQ $%d, DI", unroll*nr*4)
	p("\tSUBQ $%d, CX", unroll)
	p("\tCMPQ CX, $%d", unroll)
	p("\tJAE %s_loop", name)
	p("%s_tail:", name)
	p("\tTESTQ CX, CX")
	p("\tJZ %s_done", name)
	step(0)
	p("\tADDQ $%d, SI", mr*4)
	p("\tADDQ $%d, DI", nr*4)
	p("\tDECQ CX")
	p("\tJMP %s_tail", name)
	p("%s_done:", name)
	p("\tMOVBLZX %s, AX", argAdd)
	p("\tTESTL AX, AX")
	p("\tJZ %s_store", name)
	for i := 0; i < mr; i++ {
		p("\tVADDPS (DX), %s, %[1]s", acc(i, 0))
		p("\tVADDPS 32(DX), %s, %[1]s", acc(i, 1))
		p("\tVMOVUPS %s, (DX)", acc(i, 0))
		p("\tVMOVUPS %s, 32(DX)", acc(i, 1))
		if i < mr-1 {
			p("\tADDQ R8, DX")
		}
	}
	p("\tVZEROUPPER")
	p("\tRET")
	p("%s_store:", name)
	for i := 0; i < mr; i++ {
		p("\tVMOVUPS %s, (DX)", acc(i, 0))
		p("\tVMOVUPS %s, 32(DX)", acc(i, 1))
		if i < mr-1 {
			p("\tADDQ R8, DX")
		}
	}
	p("\tVZEROUPPER")
	p("\tRET")
	p("")
}

func main() {
	p("// Code generated by gemm_asmgen.go; DO NOT EDIT.")
	p("")
	p("//go:build amd64 && !purego")
	p("")
	p("#include \"textflag.h\"")
	p("")
	avx512("gemmKernel12x32AVX512", 12, 4, false)
	avx512("gemmKernel12x32AVX512r", 12, 4, true)
	avx512("gemmKernel12x32AVX512u8", 12, 8, false)
	avx512("gemmKernel14x32AVX512", 14, 4, false)
	avx2("gemmKernel6x16AVX2", 4)
	if err := os.WriteFile("gemm_amd64.s", out.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
}
