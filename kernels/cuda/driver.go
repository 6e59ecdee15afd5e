package cuda

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"
)

// The libraries the backend loads, and the symbols it takes from each.
// Symbol names are the versioned ones (_v2) that CUDA's headers map the
// plain names to.
type symbols struct {
	// driver (libcuda)
	cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName, cuDeviceTotalMem,
	cuDeviceGetAttribute, cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRelease, cuCtxSetCurrent,
	cuCtxSynchronize, cuMemAlloc, cuMemFree, cuMemcpyHtoDAsync, cuMemcpyDtoHAsync, cuMemcpyDtoDAsync,
	cuMemsetD32Async, cuMemGetInfo, cuModuleLoadData, cuModuleGetFunction, cuModuleUnload,
	cuLaunchKernel, cuStreamCreate, cuStreamDestroy, cuStreamSynchronize, cuGetErrorName,
	cuMemHostAlloc, cuMemFreeHost, cuEventCreate, cuEventRecord, cuEventSynchronize,
	cuEventElapsedTime, cuEventDestroy, cuStreamWaitEvent, cuFuncSetAttribute uintptr
	// NVRTC
	nvrtcVersion, nvrtcCreateProgram, nvrtcCompileProgram, nvrtcGetCUBINSize, nvrtcGetCUBIN,
	nvrtcGetProgramLogSize, nvrtcGetProgramLog, nvrtcDestroyProgram, nvrtcGetErrorString uintptr
	// cuBLAS
	cublasCreate, cublasDestroy, cublasSetStream, cublasSetWorkspace, cublasSetMathMode,
	cublasGetProperty, cublasGemmEx, cublasGemmStridedBatchedEx uintptr
}

// library is one shared library to find: what it is, the file names to
// try (newest first) and the symbols it must have.
type library struct {
	what  string
	names []string
	syms  map[string]*uintptr
}

func (s *symbols) libraries() []library {
	return []library{
		{what: "driver", names: []string{"libcuda.so.1", "libcuda.so"}, syms: map[string]*uintptr{
			"cuInit": &s.cuInit, "cuDriverGetVersion": &s.cuDriverGetVersion, "cuDeviceGetCount": &s.cuDeviceGetCount,
			"cuDeviceGet": &s.cuDeviceGet, "cuDeviceGetName": &s.cuDeviceGetName, "cuDeviceTotalMem_v2": &s.cuDeviceTotalMem,
			"cuDeviceGetAttribute": &s.cuDeviceGetAttribute, "cuDevicePrimaryCtxRetain": &s.cuDevicePrimaryCtxRetain,
			"cuDevicePrimaryCtxRelease_v2": &s.cuDevicePrimaryCtxRelease, "cuCtxSetCurrent": &s.cuCtxSetCurrent,
			"cuCtxSynchronize": &s.cuCtxSynchronize, "cuMemAlloc_v2": &s.cuMemAlloc, "cuMemFree_v2": &s.cuMemFree,
			"cuMemcpyHtoDAsync_v2": &s.cuMemcpyHtoDAsync, "cuMemcpyDtoHAsync_v2": &s.cuMemcpyDtoHAsync,
			"cuMemcpyDtoDAsync_v2": &s.cuMemcpyDtoDAsync, "cuMemsetD32Async": &s.cuMemsetD32Async,
			"cuMemGetInfo_v2": &s.cuMemGetInfo, "cuModuleLoadData": &s.cuModuleLoadData,
			"cuModuleGetFunction": &s.cuModuleGetFunction, "cuModuleUnload": &s.cuModuleUnload,
			"cuLaunchKernel": &s.cuLaunchKernel, "cuStreamCreate": &s.cuStreamCreate,
			"cuStreamDestroy_v2": &s.cuStreamDestroy, "cuStreamSynchronize": &s.cuStreamSynchronize,
			"cuGetErrorName": &s.cuGetErrorName, "cuMemHostAlloc": &s.cuMemHostAlloc, "cuMemFreeHost": &s.cuMemFreeHost,
			"cuEventCreate": &s.cuEventCreate, "cuEventRecord": &s.cuEventRecord, "cuEventSynchronize": &s.cuEventSynchronize,
			"cuEventElapsedTime": &s.cuEventElapsedTime, "cuEventDestroy_v2": &s.cuEventDestroy,
			"cuStreamWaitEvent": &s.cuStreamWaitEvent, "cuFuncSetAttribute": &s.cuFuncSetAttribute,
		}},
		{what: "nvrtc", names: []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}, syms: map[string]*uintptr{
			"nvrtcVersion": &s.nvrtcVersion, "nvrtcCreateProgram": &s.nvrtcCreateProgram,
			"nvrtcCompileProgram": &s.nvrtcCompileProgram, "nvrtcGetCUBINSize": &s.nvrtcGetCUBINSize,
			"nvrtcGetCUBIN": &s.nvrtcGetCUBIN, "nvrtcGetProgramLogSize": &s.nvrtcGetProgramLogSize,
			"nvrtcGetProgramLog": &s.nvrtcGetProgramLog, "nvrtcDestroyProgram": &s.nvrtcDestroyProgram,
			"nvrtcGetErrorString": &s.nvrtcGetErrorString,
		}},
		{what: "cublas", names: []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so"}, syms: map[string]*uintptr{
			"cublasCreate_v2": &s.cublasCreate, "cublasDestroy_v2": &s.cublasDestroy, "cublasSetStream_v2": &s.cublasSetStream,
			"cublasSetWorkspace_v2": &s.cublasSetWorkspace, "cublasSetMathMode": &s.cublasSetMathMode,
			"cublasGetProperty": &s.cublasGetProperty, "cublasGemmEx": &s.cublasGemmEx,
			"cublasGemmStridedBatchedEx": &s.cublasGemmStridedBatchedEx,
		}},
	}
}

// libDirs are the directories searched, in order, after BRAID_CUDA_LIB_PATH
// and the loader's default path.
var libDirs = []string{
	"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/local/cuda/targets/sbsa-linux/lib",
	"/usr/local/cuda-*/lib64", "/usr/local/nvidia/lib64", "/usr/local/nvidia/lib",
	"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib",
	// pip's NVIDIA wheels, as PyTorch installs them
	"/usr/local/lib/python3*/dist-packages/nvidia/*/lib", "/usr/lib/python3/dist-packages/nvidia/*/lib",
	"/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib", "/opt/*/lib/python3*/site-packages/nvidia/*/lib",
}

// The loaded libraries, once per process.
var (
	loadOnce sync.Once
	sym      symbols
	loaded   []Library
	loadErr  error
)

// load finds and loads the driver, NVRTC and cuBLAS, and fills sym. It
// fails, naming each library that is missing or too old, unless all three
// are usable. NVRTC and cuBLAS must not be of a newer major CUDA version
// than the driver supports (a CUDA 13 cuBLAS needs a CUDA 13 driver); where
// several are installed, the newest that fits is taken.
func load() error {
	loadOnce.Do(func() {
		if !built {
			loadErr = ErrNotBuilt
			return
		}
		libs := sym.libraries()
		drv, err := openLibrary(libs[0], nil)
		loaded = append(loaded, drv)
		if err != nil {
			loadErr = fmt.Errorf("cuda: %w", err)
			return
		}
		if err := checkResult("cuInit", ccall(sym.cuInit, 0)); err != nil {
			loadErr = err
			return
		}
		v := new(int32)
		if err := checkResult("cuDriverGetVersion", ccall(sym.cuDriverGetVersion, uintptr(unsafe.Pointer(v)))); err != nil {
			loadErr = err
			return
		}
		driverMajor := int(*v) / 1000
		loaded[0].Version = fmt.Sprintf("CUDA %d.%d", *v/1000, *v%1000/10)
		if *v < 12000 {
			loadErr = fmt.Errorf("cuda: the driver in %s supports CUDA %d.%d; braid needs 12.0 or newer: update the NVIDIA driver", loaded[0].Path, *v/1000, *v%1000/10)
			return
		}
		fits := func(what string, major int, version string) error {
			if major > driverMajor {
				return fmt.Errorf("%s %s is newer than the driver (CUDA %d.%d) supports", what, version, *v/1000, *v%1000/10)
			}
			return nil
		}
		var problems []string
		nvrtc, err := openLibrary(libs[1], func(l *Library) error {
			major, minor := new(int32), new(int32)
			if uint32(ccall(sym.nvrtcVersion, uintptr(unsafe.Pointer(major)), uintptr(unsafe.Pointer(minor)))) != 0 {
				return fmt.Errorf("nvrtcVersion failed")
			}
			l.Version = fmt.Sprintf("%d.%d", *major, *minor)
			return fits("NVRTC", int(*major), l.Version)
		})
		loaded = append(loaded, nvrtc)
		if err != nil {
			problems = append(problems, err.Error())
		}
		blas, err := openLibrary(libs[2], func(l *Library) error {
			var bv [3]int32
			for i := range bv {
				ccall(sym.cublasGetProperty, uintptr(i), uintptr(unsafe.Pointer(&bv[i])))
			}
			l.Version = fmt.Sprintf("%d.%d.%d", bv[0], bv[1], bv[2])
			return fits("cuBLAS", int(bv[0]), l.Version)
		})
		loaded = append(loaded, blas)
		if err != nil {
			problems = append(problems, err.Error())
		}
		if len(problems) > 0 {
			loadErr = fmt.Errorf("cuda: %s", strings.Join(problems, "; "))
		}
	})
	return loadErr
}

// openLibrary tries lib's names in every search directory and takes every
// symbol it needs from the first file that loads and that accept (if not
// nil) takes; a file accept refuses is passed over, and its reason is the
// error if no other file does.
func openLibrary(lib library, accept func(*Library) error) (Library, error) {
	l := Library{Name: lib.what}
	var refused []string
	var candidates []string
	for _, dir := range filepath.SplitList(os.Getenv("BRAID_CUDA_LIB_PATH")) {
		for _, n := range lib.names {
			candidates = append(candidates, filepath.Join(dir, n))
		}
	}
	candidates = append(candidates, lib.names...) // the loader's default path
	for _, pattern := range libDirs {
		dirs, _ := filepath.Glob(pattern)
		for _, dir := range dirs {
			for _, n := range lib.names {
				candidates = append(candidates, filepath.Join(dir, n))
			}
		}
	}
	for _, c := range candidates {
		if strings.Contains(c, "/") {
			if _, err := os.Stat(c); err != nil {
				continue
			}
		}
		h, err := dlopen(c)
		if err != nil {
			continue
		}
		missing := ""
		for name, p := range lib.syms {
			if *p, err = dlsym(h, name); err != nil {
				missing = name
				break
			}
		}
		l.Path = mappedPath(c)
		if missing != "" {
			refused = append(refused, fmt.Sprintf("%s has no %s: too old (braid needs CUDA 12 or newer)", l.Path, missing))
			continue
		}
		if accept != nil {
			if err := accept(&l); err != nil {
				refused = append(refused, fmt.Sprintf("%s: %v", l.Path, err))
				continue
			}
		}
		return l, nil
	}
	if len(refused) > 0 {
		l.Error = strings.Join(refused, "; ") + " (set BRAID_CUDA_LIB_PATH to the directory of one that fits)"
		return l, fmt.Errorf("%s", l.Error)
	}
	l.Error = fmt.Sprintf("%s not found (searched BRAID_CUDA_LIB_PATH, the loader's path, /usr/local/cuda*/lib64, /usr/lib/*-linux-gnu and pip's nvidia/*/lib; install the CUDA toolkit's %s or set BRAID_CUDA_LIB_PATH to the directory that holds it)", strings.Join(lib.names[:len(lib.names)-1], " or "), lib.what)
	if lib.what == "driver" {
		l.Error = fmt.Sprintf("the NVIDIA driver library %s was not found: is the NVIDIA driver installed, and is this a GPU machine? (BRAID_CUDA_LIB_PATH names extra directories)", lib.names[0])
	}
	return l, fmt.Errorf("%s", l.Error)
}

// mappedPath finds the file the loader actually mapped for a library
// loaded by name (or path), from /proc/self/maps; name itself if it cannot.
func mappedPath(name string) string {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return name
	}
	defer f.Close()
	base := filepath.Base(name)
	stem := strings.SplitN(base, ".so", 2)[0] + ".so"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		p := fields[len(fields)-1]
		if strings.HasPrefix(filepath.Base(p), stem) {
			return p
		}
	}
	return name
}

// cString reads the NUL-terminated C string at p (a static string of a
// CUDA library).
func cString(p uintptr) string {
	if p == 0 {
		return ""
	}
	ptr := *(*unsafe.Pointer)(unsafe.Pointer(&p))
	var b []byte
	for i := 0; i < 4096; i++ {
		c := *(*byte)(unsafe.Add(ptr, i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// cStr returns s as a NUL-terminated byte slice for C.
func cStr(s string) []byte { return append([]byte(s), 0) }

// CUresult codes braid reacts to.
const (
	cudaSuccess           = 0
	cudaErrorOutOfMemory  = 2
	cudaErrorNoDevice     = 100
	cudaErrorIllegalAddr  = 700
	cudaErrorLaunchFailed = 719
)

// faultCodes are the CUresults after which the context is unusable (the
// GPU faulted: illegal address or instruction, a kernel that failed or
// timed out, an uncorrectable ECC error, an unknown error): every later
// call fails too, so they wrap ErrDeviceFault.
var faultCodes = map[uintptr]bool{214: true, 700: true, 702: true, 714: true, 715: true, 716: true, 717: true, 718: true, 719: true, 999: true}

// resultError is a failed CUDA driver call.
type resultError struct {
	call string
	code uintptr
}

// Is makes a fault's error match ErrDeviceFault (and an allocation's
// ErrOutOfMemory).
func (e *resultError) Is(target error) bool {
	return (target == ErrDeviceFault && faultCodes[e.code]) || (target == ErrOutOfMemory && e.code == cudaErrorOutOfMemory)
}

func (e *resultError) Error() string {
	name := ""
	if sym.cuGetErrorName != 0 {
		p := new(uintptr)
		if ccall(sym.cuGetErrorName, e.code, uintptr(unsafe.Pointer(p))) == 0 {
			name = cString(*p)
		}
	}
	if name == "" {
		name = fmt.Sprintf("error %d", e.code)
	}
	return fmt.Sprintf("cuda: %s: %s (%d)", e.call, name, e.code)
}

// checkResult turns a CUresult into an error naming the call.
func checkResult(call string, r uintptr) error {
	if uint32(r) == cudaSuccess {
		return nil
	}
	return &resultError{call: call, code: uintptr(uint32(r))}
}

// Devices lists the GPUs the driver reports. It fails with ErrNotBuilt in
// the static CPU build, and names what is missing when the libraries are.
func Devices() ([]DeviceInfo, error) {
	if err := load(); err != nil {
		return nil, err
	}
	n := new(int32)
	if err := checkResult("cuDeviceGetCount", ccall(sym.cuDeviceGetCount, uintptr(unsafe.Pointer(n)))); err != nil {
		return nil, err
	}
	var out []DeviceInfo
	for i := 0; i < int(*n); i++ {
		info, err := deviceInfo(i)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// Device attributes braid reads (CUdevice_attribute).
const (
	attrSMs   = 16
	attrMajor = 75
	attrMinor = 76
)

func deviceInfo(i int) (DeviceInfo, error) {
	dev := new(int32)
	if err := checkResult("cuDeviceGet", ccall(sym.cuDeviceGet, uintptr(unsafe.Pointer(dev)), uintptr(i))); err != nil {
		return DeviceInfo{}, err
	}
	name := make([]byte, 256)
	ccall(sym.cuDeviceGetName, uintptr(unsafe.Pointer(&name[0])), uintptr(len(name)-1), uintptr(*dev))
	mem := new(uint64)
	ccall(sym.cuDeviceTotalMem, uintptr(unsafe.Pointer(mem)), uintptr(*dev))
	attr := func(a int) int {
		v := new(int32)
		ccall(sym.cuDeviceGetAttribute, uintptr(unsafe.Pointer(v)), uintptr(a), uintptr(*dev))
		return int(*v)
	}
	n := 0
	for n < len(name) && name[n] != 0 {
		n++
	}
	return DeviceInfo{Index: i, Name: string(name[:n]), MemoryBytes: int64(*mem),
		Major: attr(attrMajor), Minor: attr(attrMinor), SMs: attr(attrSMs)}, nil
}
