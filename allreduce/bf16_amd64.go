//go:build amd64 && !purego

package allreduce

import "golang.org/x/sys/cpu"

// haveBF16Asm says whether the AVX-512 bf16 conversions (bf16_amd64.s)
// run here: AVX-512F, and BW for the word moves.
var haveBF16Asm = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

// encodeBF16AVX512 writes toBF16 of src[i] to dst[i] for i < n, n a
// multiple of 16.
//
//go:noescape
func encodeBF16AVX512(dst *uint16, src *float32, n int)

// decodeBF16AVX512 sets (or, with add, adds to) dst[i] fromBF16(src[i])
// for i < n, n a multiple of 16.
//
//go:noescape
func decodeBF16AVX512(dst *float32, src *uint16, n int, add bool)
