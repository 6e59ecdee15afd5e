//go:build amd64 && !purego

package kernels

// haveAsm reports whether the assembly micro-kernels are compiled in.
const haveAsm = true
