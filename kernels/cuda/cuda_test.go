package cuda

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/braidml/braid/kernels/cuda/cudaemu"
)

func TestParseDevice(t *testing.T) {
	for _, tc := range []struct {
		in    string
		kind  string
		index int
		ok    bool
	}{
		{"cpu", "cpu", 0, true}, {"auto", "auto", 0, true}, {"cuda", "cuda", 0, true}, {"cuda:3", "cuda", 3, true},
		{"cuda:", "", 0, false}, {"cuda:-1", "", 0, false}, {"cuda:x", "", 0, false}, {"tpu", "", 0, false}, {"", "", 0, false},
	} {
		kind, index, err := ParseDevice(tc.in)
		if (err == nil) != tc.ok || kind != tc.kind || index != tc.index {
			t.Errorf("ParseDevice(%q) = %q, %d, %v; want %q, %d, ok %v", tc.in, kind, index, err, tc.kind, tc.index, tc.ok)
		}
	}
}

func TestParsePrecision(t *testing.T) {
	for _, p := range []Precision{FP32, TF32, BF16} {
		if got, err := ParsePrecision(p.String()); err != nil || got != p {
			t.Errorf("ParsePrecision(%q) = %v, %v", p, got, err)
		}
	}
	if _, err := ParsePrecision("fp16"); err == nil {
		t.Error("fp16 accepted")
	}
}

// TestCacheEntry checks that the kernel cache takes back what it wrote
// and nothing altered: a flipped byte, a truncated file, another magic.
func TestCacheEntry(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	if !ensurePrivateDir(dir) {
		t.Fatalf("%s is not private", dir)
	}
	path := filepath.Join(dir, "k.cubin")
	img := []byte("\x7fELF pretend cubin image")
	writeCacheEntry(path, img)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := checkCacheEntry(b)
	if !ok || !bytes.Equal(got, img) {
		t.Fatalf("cache entry read back as %q, %v", got, ok)
	}
	for name, bad := range map[string][]byte{
		"flipped":   append(append([]byte{}, b[:len(b)-1]...), b[len(b)-1]^1),
		"truncated": b[:len(b)-3],
		"magic":     append([]byte("braid-cubin-0\n"), b[len(cacheMagic):]...),
		"empty":     nil,
	} {
		if _, ok := checkCacheEntry(bad); ok {
			t.Errorf("%s cache entry accepted", name)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".cubin-*")); len(m) != 0 {
		t.Errorf("temporary files left behind: %v", m)
	}
	// Entries that others could have written are not trusted.
	if !privateFile(path) {
		t.Errorf("the entry just written is not private")
	}
	os.Chmod(path, 0o666)
	if privateFile(path) {
		t.Error("a world-writable entry is trusted")
	}
	link := filepath.Join(dir, "link.cubin")
	os.Symlink(path, link)
	if privateFile(link) {
		t.Error("a symbolic link is trusted")
	}
	open := filepath.Join(t.TempDir(), "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if ensurePrivateDir(open) {
		t.Error("a world-writable cache directory is trusted")
	}
}

// TestKernelSourceCompiles compiles kernels.cu for both precisions with
// clang's CUDA front end (device code only, no CUDA toolkit needed) where
// clang is installed, so that a syntax error shows before a GPU does.
func TestKernelSourceCompiles(t *testing.T) {
	clang := ""
	for _, c := range []string{"clang++", "clang++-19", "clang++-16", "clang++-15", "clang++-14"} {
		if p, err := exec.LookPath(c); err == nil {
			clang = p
			break
		}
	}
	if clang == "" {
		t.Skip("no clang++: cannot check kernels.cu without a GPU")
	}
	dir := t.TempDir()
	prelude := filepath.Join(dir, "prelude.h")
	// What NVRTC provides built in, declared for clang.
	os.WriteFile(prelude, []byte(`#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __forceinline__ __attribute__((always_inline))
#include "__clang_cuda_builtin_vars.h"
extern "C" __device__ float expf(float); extern "C" __device__ float logf(float);
extern "C" __device__ float sqrtf(float); extern "C" __device__ float rsqrtf(float);
extern "C" __device__ float fmaxf(float, float);
__device__ float __uint_as_float(unsigned int); __device__ unsigned int __float_as_uint(float);
__device__ float __shfl_xor_sync(unsigned, float, int); __device__ void __syncthreads();
`), 0o600)
	for _, bf := range []string{"0", "1"} {
		out, err := exec.Command(clang, "-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_80", "-nocudainc", "-nocudalib",
			"-std=c++17", "-Werror", "-Wno-unknown-cuda-version", "-DBRAID_BF16="+bf, "-include", prelude, "-S", "-o", filepath.Join(dir, "k.ptx"), "kernels.cu").CombinedOutput()
		if err != nil {
			t.Errorf("kernels.cu with BRAID_BF16=%s: %v\n%s", bf, err, out)
		}
	}
}

// TestDoctor runs the doctor; on a machine without a GPU it must say why,
// on one with a GPU the test kernel must pass.
func TestDoctor(t *testing.T) {
	r := Doctor()
	if !built {
		if r.OK() || len(r.Problems) == 0 {
			t.Fatalf("the CPU build's doctor says %+v", r)
		}
		return
	}
	if _, err := Devices(); err != nil {
		if r.OK() || len(r.Problems) == 0 {
			t.Fatalf("no GPU (%v) but the doctor says %+v", err, r)
		}
		t.Skipf("no GPU: %v", err)
	}
	if !r.OK() {
		t.Fatalf("doctor: %+v", r)
	}
	t.Logf("doctor: %+v", r)
}

// TestFaultErrors: the codes after which a context is dead wrap
// ErrDeviceFault, an allocation failure ErrOutOfMemory, others neither.
func TestFaultErrors(t *testing.T) {
	for code, fault := range map[uintptr]bool{700: true, 719: true, 214: true, 999: true, 1: false, 2: false, 201: false} {
		err := error(&resultError{call: "cuStreamSynchronize", code: code})
		if errors.Is(err, ErrDeviceFault) != fault {
			t.Errorf("code %d: errors.Is(ErrDeviceFault) = %v, want %v", code, !fault, fault)
		}
		if errors.Is(err, ErrOutOfMemory) != (code == 2) {
			t.Errorf("code %d: errors.Is(ErrOutOfMemory) wrong", code)
		}
	}
}

// TestKernelsOnTheEmulator runs every kernel of kernels.cu on the CPU
// (testdata/emu: each block as threads, barriers for __syncthreads and the
// warp shuffles) against a plain reference, in fp32 and bf16, so that the
// kernels' arithmetic is checked on machines without a GPU. It needs a
// C++20 compiler (g++ or clang++) and skips without one.
func TestKernelsOnTheEmulator(t *testing.T) {
	cxx := cudaemu.Compiler()
	if cxx == "" {
		t.Skip("no C++ compiler: the kernels are checked only on a GPU")
	}
	dir := t.TempDir()
	for _, bf := range []string{"0", "1"} {
		bin := filepath.Join(dir, "emu"+bf)
		if out, err := exec.Command(cxx, "-std=c++20", "-O1", "-pthread", "-DBRAID_BF16="+bf, "-o", bin, "testdata/emu/kernels_test.cc").CombinedOutput(); err != nil {
			t.Fatalf("building the emulator (BRAID_BF16=%s): %v\n%s", bf, err, out)
		}
		out, err := exec.Command(bin).CombinedOutput()
		t.Logf("BRAID_BF16=%s:\n%s", bf, out)
		if err != nil {
			t.Errorf("kernels off on the emulator (BRAID_BF16=%s): %v", bf, err)
		}
	}
}
