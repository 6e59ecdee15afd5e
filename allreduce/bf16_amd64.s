//go:build amd64 && !purego

#include "textflag.h"

// bf16 conversions of the ring's codec for AVX-512F, 16 elements a step
// (the caller hands whole blocks of 16; codec.go does the tail). They match
// toBF16 and fromBF16 bit for bit: round to nearest even by adding
// 0x7fff + the kept part's lowest bit, and NaN kept quiet (the top half
// with bit 6 set).

// func encodeBF16AVX512(dst *uint16, src *float32, n int)
TEXT ·encodeBF16AVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL $0x7fff, AX
	VPBROADCASTD AX, Z20
	MOVL $1, AX
	VPBROADCASTD AX, Z21
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z22
	MOVL $0x7f800000, AX
	VPBROADCASTD AX, Z23
	MOVL $0x0040, AX
	VPBROADCASTD AX, Z24
loop:
	CMPQ CX, $16
	JL done
	VMOVDQU32 (SI), Z0
	VPSRLD $16, Z0, Z1          // the kept half
	VPANDD Z21, Z1, Z2          // its lowest bit
	VPADDD Z20, Z0, Z3
	VPADDD Z2, Z3, Z3
	VPSRLD $16, Z3, Z3          // rounded
	VPANDD Z22, Z0, Z4          // |x|
	VPCMPUD $6, Z23, Z4, K1     // |x| > Inf: NaN
	VPORD Z24, Z1, Z5           // quiet NaN
	VMOVDQA32 Z5, K1, Z3
	VPMOVDW Z3, (DI)
	ADDQ $64, SI
	ADDQ $32, DI
	SUBQ $16, CX
	JMP loop
done:
	VZEROUPPER
	RET

// func decodeBF16AVX512(dst *float32, src *uint16, n int, add bool)
TEXT ·decodeBF16AVX512(SB), NOSPLIT, $0-25
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVB add+24(FP), AX
	TESTB AL, AL
	JNZ addloop
setloop:
	CMPQ CX, $16
	JL done2
	VPMOVZXWD (SI), Z0
	VPSLLD $16, Z0, Z0
	VMOVDQU32 Z0, (DI)
	ADDQ $32, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP setloop
addloop:
	CMPQ CX, $16
	JL done2
	VPMOVZXWD (SI), Z0
	VPSLLD $16, Z0, Z0
	VMOVUPS (DI), Z1
	VADDPS Z0, Z1, Z1           // dst + decoded, in that order, as codec.go adds
	VMOVUPS Z1, (DI)
	ADDQ $32, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP addloop
done2:
	VZEROUPPER
	RET
