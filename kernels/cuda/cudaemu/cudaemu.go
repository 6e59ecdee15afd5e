// Package cudaemu points braid's GPU backend at a stand-in for the CUDA
// libraries that runs on the CPU (../testdata/emu/fakecuda.cc: braid's own
// kernels on host memory, naive GEMMs), so that everything above the
// libraries (the bindings in package cuda, package cudamodel, GPU workers,
// GPU jobs) is tested on machines without a GPU.
//
// The GPU tests call Use from TestMain; with BRAID_CUDA_EMULATE=1 (make
// test-cuda-emu) it builds the stand-in with a C++ compiler, once per
// source version, and sets BRAID_CUDA_LIB_PATH and BRAID_CUDA_CACHE to it.
// Without that variable it does nothing, and the tests use a real GPU when
// one is there and skip otherwise. Only the binaries built with the cuda
// tag load libraries at all.
//
// The stand-in is for correctness only: it is thousands of times slower
// than a GPU, so only small models are practical.
package cudaemu

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// EnvVar selects the stand-in when set to 1.
const EnvVar = "BRAID_CUDA_EMULATE"

// Use builds the stand-in and points package cuda at it when EnvVar is 1;
// it returns the library directory, or "" when emulation is off. It must
// run before the first call into package cuda.
func Use() (string, error) {
	if os.Getenv(EnvVar) != "1" {
		return "", nil
	}
	dir, err := Build()
	if err != nil {
		return "", err
	}
	os.Setenv("BRAID_CUDA_LIB_PATH", dir)
	os.Setenv("BRAID_CUDA_CACHE", filepath.Join(dir, "kernel-cache"))
	return dir, nil
}

// Main is a test package's TestMain for the GPU tests: it calls Use, then
// runs the tests.
func Main(m *testing.M) {
	if _, err := Use(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// Compiler returns the C++20 compiler the stand-in (and the kernels'
// emulator test) is built with: g++ or clang++, "" if there is none.
func Compiler() string {
	for _, c := range []string{"g++", "clang++", "clang++-14"} {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	return ""
}

// Build compiles the stand-in (if this version is not built yet) into the
// user cache directory and returns the directory holding libcuda.so.1,
// libnvrtc.so.13 and libcublas.so.13.
func Build() (string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cudaemu: cannot locate the stand-in's sources")
	}
	cudaDir := filepath.Dir(filepath.Dir(self))
	emuDir := filepath.Join(cudaDir, "testdata", "emu")
	h := sha256.New()
	var kernels []byte
	for _, f := range []string{filepath.Join(cudaDir, "kernels.cu"), filepath.Join(emuDir, "emu.h"), filepath.Join(emuDir, "reference.h"), filepath.Join(emuDir, "fakecuda.cc")} {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("cudaemu: %w", err)
		}
		if strings.HasSuffix(f, "kernels.cu") {
			kernels = b
		}
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "braid", "cudaemu", hex.EncodeToString(h.Sum(nil))[:16])
	names := []string{"libcuda.so.1", "libnvrtc.so.13", "libcublas.so.13"}
	if _, err := os.Stat(filepath.Join(dir, names[len(names)-1])); err == nil {
		return dir, nil
	}
	cxx := Compiler()
	if cxx == "" {
		return "", fmt.Errorf("cudaemu: %s=1 needs a C++20 compiler (g++ or clang++) to build the stand-in", EnvVar)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return "", err
		}
		if tmp, err = os.MkdirTemp(filepath.Dir(dir), ".build-"); err != nil {
			return "", err
		}
	}
	defer os.RemoveAll(tmp)
	// The stand-in compiles kernels.cu twice into one library, in two
	// namespaces: without the C linkage that would make the names clash.
	src := filepath.Join(tmp, "kernels.cu")
	if err := os.WriteFile(src, []byte(strings.ReplaceAll(string(kernels), `extern "C" `, "")), 0o644); err != nil {
		return "", err
	}
	lib := filepath.Join(tmp, "libfakecuda.so")
	cmd := exec.Command(cxx, "-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-I", emuDir,
		fmt.Sprintf(`-DKERNELS_F32="%s"`, src), fmt.Sprintf(`-DKERNELS_B16="%s"`, src), "-o", lib, filepath.Join(emuDir, "fakecuda.cc"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cudaemu: building the stand-in: %v\n%s", err, out)
	}
	for _, n := range names {
		if err := os.Link(lib, filepath.Join(tmp, n)); err != nil {
			return "", err
		}
	}
	os.Remove(lib)
	if err := os.Rename(tmp, dir); err != nil && !os.IsExist(err) {
		if _, statErr := os.Stat(filepath.Join(dir, names[len(names)-1])); statErr != nil {
			return "", err
		}
	}
	return dir, nil
}
