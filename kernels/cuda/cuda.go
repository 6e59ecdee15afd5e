// Package cuda is braid's GPU backend: it loads the NVIDIA driver
// (libcuda), cuBLAS and NVRTC at run time, compiles braid's own CUDA C
// kernels (kernels.cu, kept in this package) for the device it finds, and
// runs the operations a GPT-2 training step needs on device buffers.
//
// Nothing CUDA is needed to build braid. The real backend is compiled only
// with the build tag cuda (`make build-cuda`, bin/braid-cuda); it calls the
// libraries through github.com/ebitengine/purego, which makes the binary
// dynamically linked against the system's C library. Without the tag every
// entry point returns ErrNotBuilt, and the static CPU binary stays static.
//
// Libraries are searched in the directories of BRAID_CUDA_LIB_PATH
// (colon-separated), then the dynamic loader's default path, then the usual
// CUDA install directories; CUDA 12 and 13 are accepted.
//
// A CUDA context is current per OS thread, so every call into the driver
// happens between Device.Lock and its unlock, which pin the goroutine to one
// OS thread and make the device's context current there. A Device is not
// safe for concurrent use by several goroutines at once.
//
// Compiled kernels are cached on disk (BRAID_CUDA_CACHE, or the user cache
// directory's braid/cuda) keyed by a hash of the source, the compile
// options, the device architecture and the NVRTC and driver versions.
//
// What this package does not do: choose what to compute (package
// model/cudamodel drives it), or manage several devices in one process (one
// braid node uses one GPU; run one node per GPU).
package cuda

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors.
var (
	// ErrNotBuilt is returned by every entry point of a binary built without
	// the cuda tag (the static CPU build).
	ErrNotBuilt = errors.New("cuda: this binary is built without GPU support (use bin/braid-cuda, `make build-cuda`)")
	// ErrNoDevice means the driver loaded but lists no usable GPU.
	ErrNoDevice = errors.New("cuda: no CUDA device found")
	// ErrOutOfMemory wraps every allocation that the device refused.
	ErrOutOfMemory = errors.New("cuda: out of GPU memory")
	// ErrDeviceFault is wrapped by the errors after which the GPU's context
	// cannot be used again (an illegal address, a failed kernel, an
	// uncorrectable ECC error, ...): the process must let go of the GPU.
	ErrDeviceFault = errors.New("cuda: GPU fault")
)

// DeviceInfo describes one GPU as the driver reports it.
type DeviceInfo struct {
	Index       int    `json:"index"`
	Name        string `json:"name"`
	MemoryBytes int64  `json:"memory_bytes"`
	// Compute capability, e.g. 9.0 for Hopper.
	Major int `json:"major"`
	Minor int `json:"minor"`
	SMs   int `json:"sms"`
}

// Arch is the device's architecture name for the compiler, e.g. "sm_90".
func (d DeviceInfo) Arch() string { return fmt.Sprintf("sm_%d%d", d.Major, d.Minor) }

func (d DeviceInfo) String() string {
	return fmt.Sprintf("cuda:%d %s (%.0f GiB, compute %d.%d, %d SMs)", d.Index, d.Name, float64(d.MemoryBytes)/(1<<30), d.Major, d.Minor, d.SMs)
}

// ParseDevice reads a --device value: "cpu", "cuda" (device 0), "cuda:N"
// or "auto". It returns the kind ("cpu", "cuda" or "auto") and, for cuda,
// the device index.
func ParseDevice(s string) (kind string, index int, err error) {
	switch {
	case s == "cpu", s == "auto":
		return s, 0, nil
	case s == "cuda", s == "gpu":
		return "cuda", 0, nil
	case strings.HasPrefix(s, "cuda:"):
		n, err := strconv.Atoi(s[len("cuda:"):])
		if err != nil || n < 0 || n > 1023 {
			return "", 0, fmt.Errorf("device %q: want cuda:N with N a device index (0, 1, ...)", s)
		}
		return "cuda", n, nil
	}
	return "", 0, fmt.Errorf("device %q: want cpu, cuda, cuda:N or auto", s)
}

// Library is one shared library the backend looked for.
type Library struct {
	Name    string `json:"name"`              // what it is: "driver", "cublas", "nvrtc"
	Path    string `json:"path,omitempty"`    // the file loaded, empty if none
	Version string `json:"version,omitempty"` // as the library reports it
	Error   string `json:"error,omitempty"`   // why it could not be used
}

// Report is what Doctor found: the libraries, the driver, the devices and
// whether a test kernel compiled and ran.
type Report struct {
	Built         bool         `json:"built"` // false in the static CPU build
	Libraries     []Library    `json:"libraries"`
	DriverVersion string       `json:"driver_version,omitempty"` // CUDA version the driver supports, e.g. "13.0"
	Devices       []DeviceInfo `json:"devices"`
	// KernelTest says how the test kernel went on device 0: compiled by
	// NVRTC, loaded and run with a checked result.
	KernelTest string `json:"kernel_test,omitempty"`
	CacheDir   string `json:"cache_dir,omitempty"`
	// Problems lists, in words, what is missing or broken; empty when the
	// GPU is usable.
	Problems []string `json:"problems,omitempty"`
}

// OK says whether at least one device is usable.
func (r Report) OK() bool { return r.Built && len(r.Devices) > 0 && len(r.Problems) == 0 }
