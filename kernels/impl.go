package kernels

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/cpu"
)

// Impl names an implementation of the matrix-multiply micro-kernel.
type Impl int32

// The micro-kernel implementations, slowest first.
const (
	ImplGeneric Impl = iota // pure Go, any CPU
	ImplAVX2                // AVX2 + FMA3 assembly (amd64)
	ImplAVX512              // AVX-512F assembly (amd64)
)

// String returns the name used by ParseImpl and on the command line.
func (i Impl) String() string {
	switch i {
	case ImplGeneric:
		return "generic"
	case ImplAVX2:
		return "avx2"
	case ImplAVX512:
		return "avx512"
	}
	return fmt.Sprintf("Impl(%d)", int32(i))
}

// ParseImpl maps "generic", "avx2", "avx512" or "auto" (the best this CPU
// supports) to an Impl.
func ParseImpl(s string) (Impl, error) {
	switch s {
	case "generic":
		return ImplGeneric, nil
	case "avx2":
		return ImplAVX2, nil
	case "avx512":
		return ImplAVX512, nil
	case "auto", "":
		return Detect(), nil
	}
	return 0, fmt.Errorf("kernels: unknown implementation %q (want generic, avx2, avx512 or auto)", s)
}

// Supported reports whether this CPU, OS and build can run i.
func Supported(i Impl) bool {
	switch i {
	case ImplGeneric:
		return true
	case ImplAVX2:
		return haveAsm && cpu.X86.HasAVX2 && cpu.X86.HasFMA
	case ImplAVX512:
		return haveAsm && cpu.X86.HasAVX512F && cpu.X86.HasAVX2 && cpu.X86.HasFMA
	}
	return false
}

// Detect returns the fastest Impl this machine supports.
func Detect() Impl {
	for _, i := range []Impl{ImplAVX512, ImplAVX2} {
		if Supported(i) {
			return i
		}
	}
	return ImplGeneric
}

// Implementations lists every Impl this machine supports, slowest first.
func Implementations() []Impl {
	var out []Impl
	for _, i := range []Impl{ImplGeneric, ImplAVX2, ImplAVX512} {
		if Supported(i) {
			out = append(out, i)
		}
	}
	return out
}

var activeImpl atomic.Int32

func init() { activeImpl.Store(int32(Detect())) }

// ActiveImpl returns the Impl kernels currently use.
func ActiveImpl() Impl { return Impl(activeImpl.Load()) }

// SetImpl makes kernels use i from their next call and returns the previous
// Impl. It panics if i is not Supported: forcing a path the CPU cannot run is
// a programmer error. Tests use it to run every path on one machine.
func SetImpl(i Impl) (previous Impl) {
	if !Supported(i) {
		panic("kernels: implementation " + i.String() + " is not supported on this machine")
	}
	return Impl(activeImpl.Swap(int32(i)))
}
