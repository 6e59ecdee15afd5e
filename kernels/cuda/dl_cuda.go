//go:build cuda && linux

package cuda

import "github.com/ebitengine/purego"

// built says whether this binary can call into CUDA at all.
const built = true

// dlopen loads a shared library by file name or path.
func dlopen(name string) (uintptr, error) {
	return purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

// dlsym finds a symbol of a library dlopen loaded.
func dlsym(lib uintptr, name string) (uintptr, error) { return purego.Dlsym(lib, name) }

// ccall calls the C function at fn with integer and pointer arguments and
// returns its integer result. Callers pass Go pointers as
// uintptr(unsafe.Pointer(p)) written directly in the argument list, which
// uintptrescapes keeps on the heap and alive for the call.
//
//go:uintptrescapes
func ccall(fn uintptr, args ...uintptr) uintptr {
	r, _, _ := purego.SyscallN(fn, args...)
	return r
}
