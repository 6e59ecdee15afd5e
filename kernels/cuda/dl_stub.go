//go:build !(cuda && linux)

package cuda

// built says whether this binary can call into CUDA at all.
const built = false

func dlopen(string) (uintptr, error)         { return 0, ErrNotBuilt }
func dlsym(uintptr, string) (uintptr, error) { return 0, ErrNotBuilt }
func ccall(uintptr, ...uintptr) uintptr      { panic(ErrNotBuilt) }
