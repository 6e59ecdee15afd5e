//go:build !amd64 || purego

package kernels

// archGemmConfig returns nil: without the assembly kernels every Impl that
// Supported accepts (only ImplGeneric) runs the pure-Go micro-kernel.
func archGemmConfig(Impl) *gemmConfig { return nil }
