//go:build amd64 && !purego

#include "textflag.h"

// Vectorised e^x and GELU for AVX-512F, 16 float32 lanes at a time, with a
// masked tail. e^x = 2^n·p(r) where n = round(x·log2e), r = x − n·ln2 (two-
// step Cody–Waite) and p is the degree-6 Taylor polynomial; VSCALEFPS applies
// 2^n and saturates to +Inf / 0 by itself. Inputs are clamped to
// [−104, 88.75] with NaN kept (VMAXPS/VMINPS return their second source
// when either is NaN). See vecmath.go for the Go versions these match.

// LOADCONSTS fills Z20–Z30 with the constants of EXP.
#define LOADCONSTS \
	MOVL $0x3fb8aa3b, AX; VPBROADCASTD AX, Z20 \
	MOVL $0x3f318000, AX; VPBROADCASTD AX, Z21 \
	MOVL $0xb95e8083, AX; VPBROADCASTD AX, Z22 \
	MOVL $0x3ab60b61, AX; VPBROADCASTD AX, Z23 \
	MOVL $0x3c088889, AX; VPBROADCASTD AX, Z24 \
	MOVL $0x3d2aaaab, AX; VPBROADCASTD AX, Z25 \
	MOVL $0x3e2aaaab, AX; VPBROADCASTD AX, Z26 \
	MOVL $0x3f000000, AX; VPBROADCASTD AX, Z27 \
	MOVL $0x3f800000, AX; VPBROADCASTD AX, Z28 \
	MOVL $0xc2d00000, AX; VPBROADCASTD AX, Z29 \
	MOVL $0x42b18000, AX; VPBROADCASTD AX, Z30

// EXP replaces X with e^X; N and P are scratch.
#define EXP(X, N, P) \
	VMAXPS X, Z29, X \
	VMINPS X, Z30, X \
	VMULPS Z20, X, N \
	VRNDSCALEPS $8, N, N \
	VFNMADD231PS Z21, N, X \
	VFNMADD231PS Z22, N, X \
	VMOVAPS Z23, P \
	VFMADD213PS Z24, X, P \
	VFMADD213PS Z25, X, P \
	VFMADD213PS Z26, X, P \
	VFMADD213PS Z27, X, P \
	VFMADD213PS Z28, X, P \
	VFMADD213PS Z28, X, P \
	VSCALEFPS N, P, X

// TAILMASK sets K1 to the low CX bits (0 < CX < 16).
#define TAILMASK \
	MOVL $1, AX \
	SHLL CX, AX \
	DECL AX \
	KMOVW AX, K1

// func expSumAVX512(dst, src *float32, n int, sub, scale float32, sums *[16]float32)
TEXT ·expSumAVX512(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS sub+24(FP), Z1
	VBROADCASTSS scale+28(FP), Z2
	MOVQ sums+32(FP), R8
	LOADCONSTS
	VXORPS Z3, Z3, Z3

expsum_loop:
	CMPQ CX, $16
	JLT  expsum_tail
	VMOVUPS (SI), Z0
	VSUBPS Z1, Z0, Z0
	VMULPS Z2, Z0, Z0
	EXP(Z0, Z4, Z5)
	VMOVUPS Z0, (DI)
	VADDPS Z0, Z3, Z3
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP  expsum_loop

expsum_tail:
	TESTQ CX, CX
	JZ    expsum_done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z0
	VSUBPS Z1, Z0, Z0
	VMULPS Z2, Z0, Z0
	EXP(Z0, Z4, Z5)
	VMOVUPS Z0, K1, (DI)
	VADDPS Z0, Z3, K1, Z3

expsum_done:
	VMOVUPS Z3, (R8)
	VZEROUPPER
	RET

// GELUCONSTS fills Z10–Z13 with the GELU constants.
#define GELUCONSTS \
	MOVL $0x3d372713, AX; VPBROADCASTD AX, Z10 \
	MOVL $0xbfcc422a, AX; VPBROADCASTD AX, Z11 \
	MOVL $0x3ddb33b6, AX; VPBROADCASTD AX, Z12 \
	MOVL $0x3f4c422a, AX; VPBROADCASTD AX, Z13

// GELUFWD: Z7 = x/(1 + e^(−2u)) for x in Z0, u = c(x + Kx³). Uses Z4–Z6.
#define GELUFWD \
	VMULPS Z0, Z0, Z6 \
	VMULPS Z6, Z0, Z6 \
	VFMADD213PS Z0, Z10, Z6 \
	VMULPS Z11, Z6, Z6 \
	EXP(Z6, Z4, Z5) \
	VADDPS Z28, Z6, Z6 \
	VDIVPS Z6, Z0, Z7

// func geluFwdAVX512(out, in *float32, n int)
TEXT ·geluFwdAVX512(SB), NOSPLIT, $0-24
	MOVQ out+0(FP), DI
	MOVQ in+8(FP), SI
	MOVQ n+16(FP), CX
	LOADCONSTS
	GELUCONSTS

gelufwd_loop:
	CMPQ CX, $16
	JLT  gelufwd_tail
	VMOVUPS (SI), Z0
	GELUFWD
	VMOVUPS Z7, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP  gelufwd_loop

gelufwd_tail:
	TESTQ CX, CX
	JZ    gelufwd_done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z0
	GELUFWD
	VMOVUPS Z7, K1, (DI)

gelufwd_done:
	VZEROUPPER
	RET

// GELUBWD: Z9 += Z8·GELU'(x) for x in Z0, dout in Z8. Uses Z4–Z7, Z14.
#define GELUBWD \
	VMULPS Z0, Z0, Z6 \
	VMULPS Z6, Z0, Z7 \
	VFMADD213PS Z0, Z10, Z7 \
	VMULPS Z11, Z7, Z7 \
	EXP(Z7, Z4, Z5) \
	VADDPS Z28, Z7, Z7 \
	VDIVPS Z7, Z28, Z7 \
	VFMADD213PS Z13, Z12, Z6 \
	VSUBPS Z7, Z28, Z14 \
	VMULPS Z7, Z14, Z14 \
	VMULPS Z6, Z14, Z14 \
	VMULPS Z0, Z14, Z14 \
	VADDPS Z14, Z14, Z14 \
	VADDPS Z7, Z14, Z14 \
	VFMADD231PS Z14, Z8, Z9

// func geluBwdAVX512(dinp, in, dout *float32, n int)
TEXT ·geluBwdAVX512(SB), NOSPLIT, $0-32
	MOVQ dinp+0(FP), DI
	MOVQ in+8(FP), SI
	MOVQ dout+16(FP), DX
	MOVQ n+24(FP), CX
	LOADCONSTS
	GELUCONSTS

gelubwd_loop:
	CMPQ CX, $16
	JLT  gelubwd_tail
	VMOVUPS (SI), Z0
	VMOVUPS (DX), Z8
	VMOVUPS (DI), Z9
	GELUBWD
	VMOVUPS Z9, (DI)
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $64, DI
	SUBQ $16, CX
	JMP  gelubwd_loop

gelubwd_tail:
	TESTQ CX, CX
	JZ    gelubwd_done
	TAILMASK
	VMOVUPS.Z (SI), K1, Z0
	VMOVUPS.Z (DX), K1, Z8
	VMOVUPS.Z (DI), K1, Z9
	GELUBWD
	VMOVUPS Z9, K1, (DI)

gelubwd_done:
	VZEROUPPER
	RET
