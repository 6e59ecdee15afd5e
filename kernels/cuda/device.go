package cuda

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"
)

//go:embed kernels.cu
var kernelSource string

// KernelSource is the CUDA C source of braid's kernels (kernels.cu).
func KernelSource() string { return kernelSource }

// Device is one GPU with braid's kernels loaded: its primary context, one
// stream that every operation is queued on in order, a cuBLAS handle bound
// to that stream, and the compiled kernels of each precision.
//
// Calls that queue work (launches, GEMMs, asynchronous copies) return before
// the work is done; errors of the work itself surface at the next Sync (or
// the next call that waits, such as a download). Every method must be called
// between Lock and its unlock.
type Device struct {
	Info DeviceInfo

	dev        int32
	ctx        uintptr
	stream     uintptr // every kernel, GEMM and synchronous copy, in order
	copyStream uintptr // device-to-host copies that overlap compute (async.go), made on first use
	blas       uintptr
	workspace  Buffer
	modules    map[Precision]*module
	args       *launchArgs
	consts     *[4]float32 // 1, 0, alpha: the GEMMs' scalars, read by cuBLAS from host memory
	allocated  int64       // bytes allocated through Alloc and not freed
	prof       *profiler   // per-kernel timing (StartProfile), or nil
	closed     bool
}

// launchArgs is the kernel-parameter array cuLaunchKernel reads: ptrs[i]
// points at vals[i]. It lives on the heap, owned by the Device.
type launchArgs struct {
	vals [24]uint64
	ptrs [24]uintptr
}

// Buffer is a device allocation.
type Buffer struct {
	Ptr   uintptr // device address (CUdeviceptr)
	Bytes int64
}

// Off returns the buffer starting bytes into b.
func (b Buffer) Off(bytes int64) Buffer {
	if bytes < 0 || bytes > b.Bytes {
		panic(fmt.Sprintf("cuda: offset %d outside a buffer of %d bytes", bytes, b.Bytes))
	}
	return Buffer{Ptr: b.Ptr + uintptr(bytes), Bytes: b.Bytes - bytes}
}

// Precision is the activation type of a model on the device.
type Precision int

const (
	// FP32 computes in float32; GEMMs in strict float32.
	FP32 Precision = iota
	// TF32 is FP32 with the GEMMs on the tensor cores' TF32 mode (PyTorch's
	// allow_tf32).
	TF32
	// BF16 is mixed precision like PyTorch's bf16 autocast: float32 master
	// weights, gradients, optimizer state, residual stream, norm statistics,
	// softmax and loss; bfloat16 activations and GEMM operands, with float32
	// accumulation.
	BF16
)

func (p Precision) String() string { return [...]string{"fp32", "tf32", "bf16"}[p] }

// ParsePrecision reads "fp32", "tf32" or "bf16".
func ParsePrecision(s string) (Precision, error) {
	for p := FP32; p <= BF16; p++ {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("precision %q: want fp32, tf32 or bf16", s)
}

// ActBytes is the size of one activation element.
func (p Precision) ActBytes() int64 {
	if p == BF16 {
		return 2
	}
	return 4
}

// Open makes device index usable: it retains its primary context, creates
// a stream and a cuBLAS handle. Close releases them.
func Open(index int) (_ *Device, err error) {
	if err := load(); err != nil {
		return nil, err
	}
	devs, err := Devices()
	if err != nil {
		return nil, err
	}
	if len(devs) == 0 {
		return nil, ErrNoDevice
	}
	if index < 0 || index >= len(devs) {
		return nil, fmt.Errorf("cuda: device cuda:%d does not exist (this machine has %d: cuda:0..cuda:%d)", index, len(devs), len(devs)-1)
	}
	d := &Device{Info: devs[index], modules: map[Precision]*module{}, args: new(launchArgs), consts: &[4]float32{1, 0}}
	for i := range d.args.ptrs {
		d.args.ptrs[i] = uintptr(unsafe.Pointer(&d.args.vals[i]))
	}
	dev := new(int32)
	if err := checkResult("cuDeviceGet", ccall(sym.cuDeviceGet, uintptr(unsafe.Pointer(dev)), uintptr(index))); err != nil {
		return nil, err
	}
	d.dev = *dev
	ctx := new(uintptr)
	if err := checkResult("cuDevicePrimaryCtxRetain", ccall(sym.cuDevicePrimaryCtxRetain, uintptr(unsafe.Pointer(ctx)), uintptr(d.dev))); err != nil {
		return nil, d.named(err)
	}
	d.ctx = *ctx
	unlock := d.Lock()
	defer unlock()
	defer func() {
		if err != nil { // release what was made so far
			if d.workspace.Ptr != 0 {
				d.Free(d.workspace)
			}
			if d.blas != 0 {
				ccall(sym.cublasDestroy, d.blas)
			}
			if d.stream != 0 {
				ccall(sym.cuStreamDestroy, d.stream)
			}
			ccall(sym.cuDevicePrimaryCtxRelease, uintptr(d.dev))
		}
	}()
	s := new(uintptr)
	if err := checkResult("cuStreamCreate", ccall(sym.cuStreamCreate, uintptr(unsafe.Pointer(s)), 0)); err != nil {
		return nil, d.named(err)
	}
	d.stream = *s
	h := new(uintptr)
	if r := ccall(sym.cublasCreate, uintptr(unsafe.Pointer(h))); uint32(r) != 0 {
		return nil, fmt.Errorf("cuda: %s: cublasCreate failed with status %d (a cuBLAS that does not match the driver?)", d.Info, uint32(r))
	}
	d.blas = *h
	if r := ccall(sym.cublasSetStream, d.blas, d.stream); uint32(r) != 0 {
		return nil, fmt.Errorf("cuda: %s: cublasSetStream: status %d", d.Info, uint32(r))
	}
	// cuBLAS on Hopper wants a workspace of its own; 32 MiB as NVIDIA
	// recommends, given explicitly so that it is allocated once.
	if d.workspace, err = d.Alloc(32<<20, "cuBLAS workspace"); err != nil {
		return nil, err
	}
	if r := ccall(sym.cublasSetWorkspace, d.blas, d.workspace.Ptr, uintptr(d.workspace.Bytes)); uint32(r) != 0 {
		return nil, fmt.Errorf("cuda: %s: cublasSetWorkspace: status %d", d.Info, uint32(r))
	}
	return d, nil
}

// Lock pins the calling goroutine to its OS thread and makes the device's
// context current there; call the returned function when done.
func (d *Device) Lock() (unlock func()) {
	runtime.LockOSThread()
	ccall(sym.cuCtxSetCurrent, d.ctx)
	return runtime.UnlockOSThread
}

// Close frees what Open made. The device's buffers must be freed first.
func (d *Device) Close() {
	if d == nil || d.closed {
		return
	}
	unlock := d.Lock()
	ccall(sym.cuStreamSynchronize, d.stream)
	for _, m := range d.modules {
		ccall(sym.cuModuleUnload, m.handle)
	}
	d.Free(d.workspace)
	ccall(sym.cublasDestroy, d.blas)
	if d.copyStream != 0 {
		ccall(sym.cuStreamSynchronize, d.copyStream)
		ccall(sym.cuStreamDestroy, d.copyStream)
	}
	ccall(sym.cuStreamDestroy, d.stream)
	unlock()
	ccall(sym.cuDevicePrimaryCtxRelease, uintptr(d.dev))
	d.closed = true
}

// named wraps err with the device's name, so that an error says which GPU.
func (d *Device) named(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", d.Info, err)
}

// MemInfo returns the device's free and total memory in bytes.
func (d *Device) MemInfo() (free, total int64) {
	f, t := new(uint64), new(uint64)
	ccall(sym.cuMemGetInfo, uintptr(unsafe.Pointer(f)), uintptr(unsafe.Pointer(t)))
	return int64(*f), int64(*t)
}

// Allocated is the bytes this Device has allocated and not freed.
func (d *Device) Allocated() int64 { return d.allocated }

// Alloc allocates bytes of device memory for what (named in the error).
// When the device refuses, the error wraps ErrOutOfMemory and says what was
// asked and what is free.
func (d *Device) Alloc(bytes int64, what string) (Buffer, error) {
	if bytes <= 0 {
		bytes = 4
	}
	p := new(uintptr)
	r := ccall(sym.cuMemAlloc, uintptr(unsafe.Pointer(p)), uintptr(bytes))
	if uint32(r) == cudaErrorOutOfMemory {
		free, total := d.MemInfo()
		return Buffer{}, fmt.Errorf("%w on %s: %s needs %.2f GiB; %.2f GiB of %.2f GiB are free (braid holds %.2f GiB)",
			ErrOutOfMemory, d.Info, what, gib(bytes), gib(free), gib(total), gib(d.allocated))
	}
	if err := checkResult("cuMemAlloc", r); err != nil {
		return Buffer{}, d.named(fmt.Errorf("allocating %s (%d bytes): %w", what, bytes, err))
	}
	d.allocated += bytes
	return Buffer{Ptr: *p, Bytes: bytes}, nil
}

func gib(b int64) float64 { return float64(b) / (1 << 30) }

// Free frees b (a zero Buffer is ignored).
func (d *Device) Free(b Buffer) {
	if b.Ptr == 0 {
		return
	}
	ccall(sym.cuMemFree, b.Ptr)
	d.allocated -= b.Bytes
}

// Sync waits for the device's queued work and returns its first error,
// naming the device.
func (d *Device) Sync() error {
	return d.named(checkResult("cuStreamSynchronize", ccall(sym.cuStreamSynchronize, d.stream)))
}

// upload copies n bytes from host memory at src to dst, in stream order.
// From pageable (Go) memory it returns once src may be reused; from pinned
// memory (AllocHostF32) the copy may still be running: the caller must not
// change src before the stream has passed it (a Sync, or a download).
func (d *Device) upload(dst Buffer, src unsafe.Pointer, n int64) error {
	if n > dst.Bytes {
		panic(fmt.Sprintf("cuda: upload of %d bytes into a buffer of %d", n, dst.Bytes))
	}
	if n == 0 {
		return nil
	}
	return d.named(checkResult("cuMemcpyHtoDAsync", ccall(sym.cuMemcpyHtoDAsync, dst.Ptr, uintptr(src), uintptr(n), d.stream)))
}

// download copies n bytes from src to host memory at dst and waits for it.
func (d *Device) download(dst unsafe.Pointer, src Buffer, n int64) error {
	if n > src.Bytes {
		panic(fmt.Sprintf("cuda: download of %d bytes from a buffer of %d", n, src.Bytes))
	}
	if n == 0 {
		return nil
	}
	if err := checkResult("cuMemcpyDtoHAsync", ccall(sym.cuMemcpyDtoHAsync, uintptr(dst), src.Ptr, uintptr(n), d.stream)); err != nil {
		return d.named(err)
	}
	return d.Sync()
}

// UploadF32 copies src to the start of dst.
func (d *Device) UploadF32(dst Buffer, src []float32) error {
	if len(src) == 0 {
		return nil
	}
	err := d.upload(dst, unsafe.Pointer(&src[0]), int64(len(src))*4)
	runtime.KeepAlive(src)
	return err
}

// UploadI32 copies src to the start of dst.
func (d *Device) UploadI32(dst Buffer, src []int32) error {
	if len(src) == 0 {
		return nil
	}
	err := d.upload(dst, unsafe.Pointer(&src[0]), int64(len(src))*4)
	runtime.KeepAlive(src)
	return err
}

// DownloadF32 copies the start of src to dst and waits for it.
func (d *Device) DownloadF32(dst []float32, src Buffer) error {
	if len(dst) == 0 {
		return nil
	}
	err := d.download(unsafe.Pointer(&dst[0]), src, int64(len(dst))*4)
	runtime.KeepAlive(dst)
	return err
}

// DownloadF64 copies the start of src to dst and waits for it.
func (d *Device) DownloadF64(dst []float64, src Buffer) error {
	if len(dst) == 0 {
		return nil
	}
	err := d.download(unsafe.Pointer(&dst[0]), src, int64(len(dst))*8)
	runtime.KeepAlive(dst)
	return err
}

// DownloadU16 copies the start of src to dst (raw 16-bit values) and waits.
func (d *Device) DownloadU16(dst []uint16, src Buffer) error {
	if len(dst) == 0 {
		return nil
	}
	err := d.download(unsafe.Pointer(&dst[0]), src, int64(len(dst))*2)
	runtime.KeepAlive(dst)
	return err
}

// Zero sets the first bytes (a multiple of 4) of b to zero, in stream order.
func (d *Device) Zero(b Buffer, bytes int64) error {
	if bytes%4 != 0 || bytes > b.Bytes {
		panic(fmt.Sprintf("cuda: Zero of %d bytes in a buffer of %d", bytes, b.Bytes))
	}
	if bytes == 0 {
		return nil
	}
	return d.named(checkResult("cuMemsetD32Async", ccall(sym.cuMemsetD32Async, b.Ptr, 0, uintptr(bytes/4), d.stream)))
}

// Copy copies bytes from src to dst on the device, in stream order.
func (d *Device) Copy(dst, src Buffer, bytes int64) error {
	if bytes > dst.Bytes || bytes > src.Bytes {
		panic(fmt.Sprintf("cuda: Copy of %d bytes between buffers of %d and %d", bytes, src.Bytes, dst.Bytes))
	}
	if bytes == 0 {
		return nil
	}
	return d.named(checkResult("cuMemcpyDtoDAsync", ccall(sym.cuMemcpyDtoDAsync, dst.Ptr, src.Ptr, uintptr(bytes), d.stream)))
}

// ---- kernels -------------------------------------------------------------

// module is kernels.cu compiled for one precision: its functions by name.
type module struct {
	handle uintptr
	fns    map[string]uintptr
}

// Kernel names in kernels.cu.
var kernelNames = []string{
	"axpy", "fill_act", "cast_to_act", "residual_forward", "gelu_forward", "gelu_backward",
	"encoder_forward", "encoder_backward_wpe", "encoder_backward_wte", "layernorm_forward", "layernorm_backward",
	"permute_qkv", "permute_qkv_backward", "unpermute", "unpermute_backward", "softmax_forward", "softmax_backward",
	"crossentropy_forward", "crossentropy_backward", "sumsq_partials", "adamw",
	"rmsnorm_forward", "rmsnorm_backward", "permute_qkv_gqa", "permute_qkv_gqa_backward", "swiglu_forward", "swiglu_backward",
}

// Module returns braid's kernels compiled for precision p, compiling them
// (or reading them from the disk cache) on first use.
func (d *Device) module(p Precision) (*module, error) {
	if p == TF32 {
		p = FP32 // the same kernels; only the GEMMs differ
	}
	if m := d.modules[p]; m != nil {
		return m, nil
	}
	bf := 0
	if p == BF16 {
		bf = 1
	}
	opts := []string{"--gpu-architecture=" + d.Info.Arch(), "--std=c++17", fmt.Sprintf("-DBRAID_BF16=%d", bf)}
	image, path, err := d.compile(kernelSource, opts)
	if err != nil {
		return nil, err
	}
	h := new(uintptr)
	err = checkResult("cuModuleLoadData", ccall(sym.cuModuleLoadData, uintptr(unsafe.Pointer(h)), uintptr(unsafe.Pointer(&image[0]))))
	runtime.KeepAlive(image)
	if err != nil && path != "" {
		// A cached image the driver refuses (written by another driver
		// version under the same key, or damaged): drop it, compile again.
		os.Remove(path)
		if image, _, err = d.compile(kernelSource, opts); err != nil {
			return nil, err
		}
		err = checkResult("cuModuleLoadData", ccall(sym.cuModuleLoadData, uintptr(unsafe.Pointer(h)), uintptr(unsafe.Pointer(&image[0]))))
		runtime.KeepAlive(image)
	}
	if err != nil {
		return nil, d.named(err)
	}
	m := &module{handle: *h, fns: map[string]uintptr{}}
	for _, name := range kernelNames {
		f := new(uintptr)
		cname := cStr(name)
		if err := checkResult("cuModuleGetFunction "+name, ccall(sym.cuModuleGetFunction, uintptr(unsafe.Pointer(f)), m.handle, uintptr(unsafe.Pointer(&cname[0])))); err != nil {
			ccall(sym.cuModuleUnload, m.handle)
			return nil, d.named(err)
		}
		m.fns[name] = *f
	}
	d.modules[p] = m
	return m, nil
}

// CacheDir is where compiled kernels are kept: BRAID_CUDA_CACHE, else the
// user cache directory's braid/cuda; "" (no disk cache: kernels are
// compiled at every start) where there is no user cache directory. A
// cached kernel runs with the process's access to the GPU and its pinned
// memory, so the cache is used only where nobody else can write: see
// privateDir and privateFile.
func CacheDir() string {
	if dir := os.Getenv("BRAID_CUDA_CACHE"); dir != "" {
		return dir
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(base, "braid", "cuda")
}

// cacheMagic starts a cache file, followed by the SHA-256 of the image.
const cacheMagic = "braid-cubin-1\n"

// compile returns the device image (cubin) of src compiled with opts for
// this device, from the disk cache when a valid entry is there (and the
// entry's path, "" when compiled now). A cache entry that does not check
// out (truncated, altered, not private to this user) is ignored and
// rewritten; a cache that cannot be written only costs a compile next time.
func (d *Device) compile(src string, opts []string) ([]byte, string, error) {
	nv := loaded[1].Version
	key := sha256.Sum256([]byte(strings.Join(append([]string{src, d.Info.Arch(), nv, loaded[0].Version}, opts...), "\x00")))
	dir := CacheDir()
	private := dir != "" && ensurePrivateDir(dir)
	path := filepath.Join(dir, hex.EncodeToString(key[:16])+".cubin")
	if private && privateFile(path) {
		if b, err := os.ReadFile(path); err == nil {
			if img, ok := checkCacheEntry(b); ok {
				return img, path, nil
			}
		}
	}
	img, err := nvrtcCompile(src, opts)
	if err != nil {
		return nil, "", d.named(err)
	}
	if private {
		writeCacheEntry(path, img)
	}
	return img, "", nil
}

// ensurePrivateDir makes dir (mode 0700) if it is missing and says whether
// it is a directory of this user's that nobody else may write to (not a
// symbolic link, not group- or world-writable).
func ensurePrivateDir(dir string) bool {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false
	}
	fi, err := os.Lstat(dir)
	return err == nil && fi.IsDir() && ownedPrivately(fi)
}

// privateFile says whether path is a regular file of this user's that
// nobody else may write to (a missing file is not).
func privateFile(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode().IsRegular() && ownedPrivately(fi)
}

func checkCacheEntry(b []byte) ([]byte, bool) {
	if len(b) < len(cacheMagic)+32+1 || string(b[:len(cacheMagic)]) != cacheMagic {
		return nil, false
	}
	sum, img := b[len(cacheMagic):len(cacheMagic)+32], b[len(cacheMagic)+32:]
	want := sha256.Sum256(img)
	if string(sum) != string(want[:]) {
		return nil, false
	}
	return img, true
}

// writeCacheEntry writes img to path atomically (temporary file, rename).
func writeCacheEntry(path string, img []byte) {
	sum := sha256.Sum256(img)
	f, err := os.CreateTemp(filepath.Dir(path), ".cubin-*")
	if err != nil {
		return
	}
	_, err = f.Write(append(append([]byte(cacheMagic), sum[:]...), img...))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
}

// nvrtcCompile compiles CUDA C source to a cubin with NVRTC.
func nvrtcCompile(src string, opts []string) ([]byte, error) {
	prog := new(uintptr)
	csrc, cname := cStr(src), cStr("kernels.cu")
	if r := uint32(ccall(sym.nvrtcCreateProgram, uintptr(unsafe.Pointer(prog)), uintptr(unsafe.Pointer(&csrc[0])), uintptr(unsafe.Pointer(&cname[0])), 0, 0, 0)); r != 0 {
		return nil, fmt.Errorf("cuda: nvrtcCreateProgram: %s", cString(ccall(sym.nvrtcGetErrorString, uintptr(r))))
	}
	defer ccall(sym.nvrtcDestroyProgram, uintptr(unsafe.Pointer(prog)))
	copts := make([][]byte, len(opts))
	ptrs := make([]uintptr, len(opts))
	for i, o := range opts {
		copts[i] = cStr(o)
		ptrs[i] = uintptr(unsafe.Pointer(&copts[i][0]))
	}
	r := uint32(ccall(sym.nvrtcCompileProgram, *prog, uintptr(len(opts)), uintptr(unsafe.Pointer(&ptrs[0]))))
	runtime.KeepAlive(copts)
	if r != 0 {
		n := new(uintptr)
		ccall(sym.nvrtcGetProgramLogSize, *prog, uintptr(unsafe.Pointer(n)))
		log := make([]byte, *n+1)
		ccall(sym.nvrtcGetProgramLog, *prog, uintptr(unsafe.Pointer(&log[0])))
		return nil, fmt.Errorf("cuda: NVRTC could not compile braid's kernels (%s) with %v: %s", cString(ccall(sym.nvrtcGetErrorString, uintptr(r))), opts, strings.TrimRight(string(log), "\x00\n"))
	}
	n := new(uintptr)
	if r := uint32(ccall(sym.nvrtcGetCUBINSize, *prog, uintptr(unsafe.Pointer(n)))); r != 0 || *n == 0 {
		return nil, fmt.Errorf("cuda: nvrtcGetCUBINSize: %s", cString(ccall(sym.nvrtcGetErrorString, uintptr(r))))
	}
	img := make([]byte, *n)
	if r := uint32(ccall(sym.nvrtcGetCUBIN, *prog, uintptr(unsafe.Pointer(&img[0])))); r != 0 {
		return nil, fmt.Errorf("cuda: nvrtcGetCUBIN: %s", cString(ccall(sym.nvrtcGetErrorString, uintptr(r))))
	}
	return img, nil
}

// Arg is one kernel argument, as cuLaunchKernel reads it: a device
// pointer, an int, a long or a float, in the low bytes of 8.
type Arg uint64

// P is a device pointer argument (0 for a null pointer).
func P(b Buffer) Arg { return Arg(b.Ptr) }

// I is an int (or long) argument.
func I(v int) Arg { return Arg(uint64(int64(v))) }

// F is a float argument.
func F(v float32) Arg { return Arg(math.Float32bits(v)) }

// Launch queues kernel name of precision p's module on grid × block
// threads (x dimensions only; shared memory is static) with args.
func (d *Device) Launch(p Precision, name string, grid, block int, args ...Arg) error {
	m, err := d.module(p)
	if err != nil {
		return err
	}
	f := m.fns[name]
	if f == 0 {
		panic("cuda: no kernel " + name)
	}
	if len(args) > len(d.args.vals) {
		panic("cuda: too many kernel arguments")
	}
	if grid < 1 {
		return nil
	}
	for i, a := range args {
		d.args.vals[i] = uint64(a)
	}
	if d.prof != nil {
		d.profBegin(name)
		defer d.profEnd()
	}
	r := ccall(sym.cuLaunchKernel, f, uintptr(grid), 1, 1, uintptr(block), 1, 1, 0, d.stream, uintptr(unsafe.Pointer(&d.args.ptrs[0])), 0)
	if err := checkResult("cuLaunchKernel "+name, r); err != nil {
		return d.named(err)
	}
	return nil
}
