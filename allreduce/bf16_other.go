//go:build !amd64 || purego

package allreduce

const haveBF16Asm = false

func encodeBF16AVX512(dst *uint16, src *float32, n int)           { panic("unreachable") }
func decodeBF16AVX512(dst *float32, src *uint16, n int, add bool) { panic("unreachable") }
