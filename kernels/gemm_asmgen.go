//go:build ignore

// gemm_asmgen.go writes gemm_amd64.s: the AVX-512 and AVX2 micro-kernels
// and the packing routines.
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

// avx512 writes an mr×(16·nv) AVX-512F kernel: mr·nv zmm accumulators
// (nv per row of C), the nv B vectors of a k step in the next nv registers,
// and each A value broadcast once into one of the remaining registers (in
// rotation) and used by nv FMAs. Broadcasting into a register costs one load
// per row, where an embedded-broadcast FMA would load the value nv times;
// on Zen 5 the register form runs measurably closer to peak.
func avx512(name string, mr, nv, unroll int) {
	nr := 16 * nv
	acc := func(i, j int) string { return fmt.Sprintf("Z%d", nv*i+j) }
	bv := func(j int) string { return fmt.Sprintf("Z%d", mr*nv+j) }
	firstBC := mr*nv + nv
	nbc := 32 - firstBC
	if nbc < 1 {
		log.Fatalf("%s: %d accumulators and %d B registers leave none for broadcasts", name, mr*nv, nv)
	}
	bc := func(i int) string { return fmt.Sprintf("Z%d", firstBC+i%nbc) }
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
		for off := 0; off < nr*4; off += 64 {
			p("\tPREFETCHT0 %d(R9)", off)
		}
		p("\tPREFETCHT0 %d(R9)", nr*4-4)
		if i < mr-1 {
			p("\tADDQ R8, R9")
		}
	}
	for i := 0; i < mr; i++ {
		for j := 0; j < nv; j++ {
			p("\tVPXORD %s, %[1]s, %[1]s", acc(i, j))
		}
	}
	step := func(u int) {
		for j := 0; j < nv; j++ {
			p("\tVMOVUPS %d(DI), %s", (u*nr+16*j)*4, bv(j))
		}
		for i := 0; i < mr; i++ {
			p("\tVBROADCASTSS %d(SI), %s", (u*mr+i)*4, bc(i))
			for j := 0; j < nv; j++ {
				p("\tVFMADD231PS %s, %s, %s", bc(i), bv(j), acc(i, j))
			}
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
		for j := 0; j < nv; j++ {
			p("\tVADDPS %d(DX), %s, %[2]s", 64*j, acc(i, j))
		}
		for j := 0; j < nv; j++ {
			p("\tVMOVUPS %s, %d(DX)", acc(i, j), 64*j)
		}
		if i < mr-1 {
			p("\tADDQ R8, DX")
		}
	}
	p("\tVZEROUPPER")
	p("\tRET")
	p("%s_store:", name)
	for i := 0; i < mr; i++ {
		for j := 0; j < nv; j++ {
			p("\tVMOVUPS %s, %d(DX)", acc(i, j), 64*j)
		}
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

// packAsm holds the packing routines of the AVX2 and AVX-512 paths; they
// need only AVX. packTrans4AVX transposes a 4×8 block per iteration: 4
// source rows (contiguous in k) × 8 k steps become 8 groups of 4 values,
// stored r floats apart, with four UNPCKs and four SHUFPSs; the low 128-bit
// halves are k steps 0…3 and the high halves k steps 4…7. packCopyAVX copies
// full panels row by row, with an unrolled path for the 32-wide B panels.
const packAsm = `// func packTrans4AVX(d, s []float32, ld, kc, r int)
TEXT ·packTrans4AVX(SB), NOSPLIT, $0-72
	MOVQ d_base+0(FP), DI
	MOVQ s_base+24(FP), SI
	MOVQ ld+48(FP), R8
	SHLQ $2, R8
	MOVQ kc+56(FP), CX
	SHRQ $3, CX
	JZ   packTrans4AVX_done
	MOVQ r+64(FP), R9
	SHLQ $2, R9
	LEAQ (SI)(R8*2), R10
	LEAQ (R9)(R9*2), R12
	LEAQ (R9*4), R11

packTrans4AVX_loop:
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(R8*1), Y1
	VMOVUPS (R10), Y2
	VMOVUPS (R10)(R8*1), Y3
	VUNPCKLPS Y1, Y0, Y4
	VUNPCKHPS Y1, Y0, Y5
	VUNPCKLPS Y3, Y2, Y6
	VUNPCKHPS Y3, Y2, Y7
	VSHUFPS $0x44, Y6, Y4, Y0
	VSHUFPS $0xEE, Y6, Y4, Y1
	VSHUFPS $0x44, Y7, Y5, Y2
	VSHUFPS $0xEE, Y7, Y5, Y3
	VMOVUPS X0, (DI)
	VMOVUPS X1, (DI)(R9*1)
	VMOVUPS X2, (DI)(R9*2)
	VMOVUPS X3, (DI)(R12*1)
	ADDQ R11, DI
	VEXTRACTF128 $1, Y0, (DI)
	VEXTRACTF128 $1, Y1, (DI)(R9*1)
	VEXTRACTF128 $1, Y2, (DI)(R9*2)
	VEXTRACTF128 $1, Y3, (DI)(R12*1)
	ADDQ R11, DI
	ADDQ $32, SI
	ADDQ $32, R10
	DECQ CX
	JNZ  packTrans4AVX_loop
	VZEROUPPER

packTrans4AVX_done:
	RET

// func packCopyAVX(d, s []float32, ld, kc, r int)
TEXT ·packCopyAVX(SB), NOSPLIT, $0-72
	MOVQ d_base+0(FP), DI
	MOVQ s_base+24(FP), SI
	MOVQ ld+48(FP), R8
	SHLQ $2, R8
	MOVQ kc+56(FP), CX
	MOVQ r+64(FP), R9
	TESTQ CX, CX
	JZ   packCopyAVX_done
	CMPQ R9, $32
	JNE  packCopyAVX_row

packCopyAVX_row32:
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS 64(SI), Y2
	VMOVUPS 96(SI), Y3
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ R8, SI
	ADDQ $128, DI
	DECQ CX
	JNZ  packCopyAVX_row32
	VZEROUPPER
	RET

packCopyAVX_row:
	MOVQ R9, DX
	XORQ AX, AX

packCopyAVX_chunk8:
	CMPQ DX, $8
	JB   packCopyAVX_chunk4
	VMOVUPS (SI)(AX*1), Y0
	VMOVUPS Y0, (DI)(AX*1)
	ADDQ $32, AX
	SUBQ $8, DX
	JMP  packCopyAVX_chunk8

packCopyAVX_chunk4:
	TESTQ DX, DX
	JZ   packCopyAVX_next
	VMOVUPS (SI)(AX*1), X0
	VMOVUPS X0, (DI)(AX*1)

packCopyAVX_next:
	ADDQ R8, SI
	LEAQ (DI)(R9*4), DI
	DECQ CX
	JNZ  packCopyAVX_row
	VZEROUPPER

packCopyAVX_done:
	RET
`

func main() {
	p("// Code generated by gemm_asmgen.go; DO NOT EDIT.")
	p("")
	p("//go:build amd64 && !purego")
	p("")
	p("#include \"textflag.h\"")
	p("")
	avx512("gemmKernel8x32AVX512", 8, 2, 4)
	avx2("gemmKernel6x16AVX2", 4)
	out.WriteString(packAsm)
	if err := os.WriteFile("gemm_amd64.s", out.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
}
