// fakecuda.cc is a stand-in for the NVIDIA driver, NVRTC and cuBLAS that
// runs on the CPU: built as one shared library and installed under the
// names braid loads (libcuda.so.1, libnvrtc.so.13, libcublas.so.13), it
// lets bin/braid-cuda and the GPU tests run where there is no GPU
// (package cudaemu builds it; BRAID_CUDA_EMULATE=1 selects it).
//
// "Device" memory is host memory; every call completes before it returns
// (streams and events only keep their order); kernels are braid's own,
// kernels.cu compiled twice into this library (fp32 and bf16, namespaces
// f32 and b16: the build strips their extern "C") and run thread by thread
// (emu.h), except the eight that synchronise their threads, which run as
// their sequential references (reference.h, checked against the real
// kernels by kernels_test.cc); GEMMs are naive loops. The device reports compute capability 1.0, so that its
// "cubins" never share a cache entry with a real GPU's. It is for
// correctness, not speed: only small models are practical.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include "emu.h"

namespace f32 {
#define BRAID_BF16 0
#include KERNELS_F32
#include "reference.h"
#undef BRAID_BF16
}
namespace b16 {
#define BRAID_BF16 1
#include KERNELS_B16
#include "reference.h"
#undef BRAID_BF16
}

// ---- launching a kernel from cuLaunchKernel's parameter array ------------

template <typename... A, size_t... I>
static void invoke_impl(void (*k)(A...), void** p, std::index_sequence<I...>) { k(*(A*)p[I]...); }
template <typename... A>
static void invoke(void (*k)(A...), void** p) { invoke_impl(k, p, std::index_sequence_for<A...>{}); }

struct Kernel {
    const char* name;
    void (*run)(void** params);
    // once: run a sequential reference (reference.h) once for the whole
    // launch instead of every thread of every block (the kernels that
    // synchronise their threads, which threads would make very slow)
    bool once;
};

static void launch(const Kernel* k, int grid, int block, void** params) {
    blockDim.x = block;
    gridDim.x = grid;
    if (k->once) {
        k->run(params);
        return;
    }
    for (int b = 0; b < grid; b++) {
        blockIdx.x = b;
        for (int t = 0; t < block; t++) {
            threadIdx.x = t;
            k->run(params);
        }
    }
}

#define K(ns, name) {#name, [](void** p) { invoke(ns::name, p); }, false}
#define R(ns, name) {#name, [](void** p) { invoke(ns::ref_##name, p); }, true}
#define TABLE(ns) { \
    K(ns, axpy), K(ns, fill_act), K(ns, cast_to_act), K(ns, residual_forward), K(ns, gelu_forward), \
    K(ns, gelu_backward), K(ns, encoder_forward), K(ns, encoder_backward_wpe), K(ns, encoder_backward_wte), \
    R(ns, layernorm_forward), R(ns, layernorm_backward), K(ns, permute_qkv), K(ns, permute_qkv_backward), \
    K(ns, unpermute), K(ns, unpermute_backward), R(ns, softmax_forward), R(ns, softmax_backward), \
    R(ns, crossentropy_forward), K(ns, crossentropy_backward), R(ns, sumsq_partials), K(ns, adamw), \
    R(ns, rmsnorm_forward), R(ns, rmsnorm_backward), K(ns, permute_qkv_gqa), K(ns, permute_qkv_gqa_backward), \
    K(ns, swiglu_forward), K(ns, swiglu_backward), \
    {nullptr, nullptr, false} }
static const Kernel tableF32[] = TABLE(f32);
static const Kernel tableB16[] = TABLE(b16);

// ---- the driver ------------------------------------------------------------

typedef int CUresult;
static const CUresult OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_FOUND = 500;
static const long long TOTAL = 16LL << 30;
static long long allocated = 0;
static std::map<void*, size_t> allocs;
static std::mutex allocMu;

extern "C" {
CUresult cuInit(unsigned) { return OK; }
CUresult cuDriverGetVersion(int* v) { *v = 13000; return OK; }
CUresult cuDeviceGetCount(int* n) { *n = 1; return OK; }
CUresult cuDeviceGet(int* d, int i) { if (i != 0) return 101; *d = 0; return OK; }
CUresult cuDeviceGetName(char* name, int len, int) { std::snprintf(name, len, "braid emulated GPU (CPU)"); return OK; }
CUresult cuDeviceTotalMem_v2(size_t* b, int) { *b = TOTAL; return OK; }
CUresult cuDeviceGetAttribute(int* v, int attr, int) {
    switch (attr) { case 75: *v = 1; break; case 76: *v = 0; break; case 16: *v = 4; break; default: *v = 0; }
    return OK;
}
CUresult cuDevicePrimaryCtxRetain(void** ctx, int) { *ctx = (void*)0x1; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(int) { return OK; }
CUresult cuCtxSetCurrent(void*) { return OK; }
CUresult cuCtxSynchronize() { return OK; }
CUresult cuMemAlloc_v2(void** p, size_t n) {
    std::lock_guard<std::mutex> l(allocMu);
    if (allocated + (long long)n > TOTAL) return OUT_OF_MEMORY;
    *p = std::calloc(1, n ? n : 1);
    if (!*p) return OUT_OF_MEMORY;
    allocs[*p] = n;
    allocated += n;
    return OK;
}
CUresult cuMemFree_v2(void* p) {
    std::lock_guard<std::mutex> l(allocMu);
    auto it = allocs.find(p);
    if (it == allocs.end()) return INVALID_VALUE;
    allocated -= it->second;
    allocs.erase(it);
    std::free(p);
    return OK;
}
CUresult cuMemGetInfo_v2(size_t* free, size_t* total) { *free = TOTAL - allocated; *total = TOTAL; return OK; }
CUresult cuMemcpyHtoDAsync_v2(void* d, const void* h, size_t n, void*) { std::memcpy(d, h, n); return OK; }
CUresult cuMemcpyDtoHAsync_v2(void* h, const void* d, size_t n, void*) { std::memcpy(h, d, n); return OK; }
CUresult cuMemcpyDtoDAsync_v2(void* d, const void* s, size_t n, void*) { std::memmove(d, s, n); return OK; }
CUresult cuMemsetD32Async(void* d, unsigned v, size_t n, void*) { for (size_t i = 0; i < n; i++) ((unsigned*)d)[i] = v; return OK; }
CUresult cuMemHostAlloc(void** p, size_t n, unsigned) { *p = std::calloc(1, n ? n : 1); return *p ? OK : OUT_OF_MEMORY; }
CUresult cuMemFreeHost(void* p) { std::free(p); return OK; }
CUresult cuModuleLoadData(void** mod, const void* image) {
    const char* s = (const char*)image;
    if (std::strncmp(s, "EMU-f32", 7) == 0) *mod = (void*)tableF32;
    else if (std::strncmp(s, "EMU-b16", 7) == 0) *mod = (void*)tableB16;
    else return 200; // CUDA_ERROR_INVALID_IMAGE
    return OK;
}
CUresult cuModuleGetFunction(void** f, void* mod, const char* name) {
    for (const Kernel* k = (const Kernel*)mod; k->name; k++)
        if (std::strcmp(k->name, name) == 0) { *f = (void*)k; return OK; }
    return NOT_FOUND;
}
CUresult cuModuleUnload(void*) { return OK; }
CUresult cuLaunchKernel(void* f, unsigned gx, unsigned, unsigned, unsigned bx, unsigned, unsigned, unsigned, void*, void** params, void**) {
    static std::mutex mu; // one launch at a time: emu.h's block state is global
    std::lock_guard<std::mutex> l(mu);
    static bool prof = std::getenv("FAKECUDA_PROFILE") != nullptr;
    auto t0 = std::chrono::steady_clock::now();
    launch((const Kernel*)f, gx, bx, params);
    if (prof) std::fprintf(stderr, "fakecuda: %s %ux%u %.3f ms\n", ((const Kernel*)f)->name, gx, bx,
                           std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    return OK;
}
CUresult cuStreamCreate(void** s, unsigned) { *s = new int(0); return OK; }
CUresult cuStreamDestroy_v2(void* s) { delete (int*)s; return OK; }
CUresult cuStreamSynchronize(void*) { return OK; }
CUresult cuGetErrorName(CUresult c, const char** s) {
    switch (c) {
    case 0: *s = "CUDA_SUCCESS"; break;
    case 2: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case 200: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
    case 500: *s = "CUDA_ERROR_NOT_FOUND"; break;
    default: *s = "CUDA_ERROR_EMULATED"; break;
    }
    return OK;
}
CUresult cuEventCreate(void** e, unsigned) { *e = new int(0); return OK; }
CUresult cuEventRecord(void*, void*) { return OK; }
CUresult cuEventSynchronize(void*) { return OK; }
CUresult cuEventElapsedTime(float* ms, void*, void*) { *ms = 0; return OK; }
CUresult cuEventDestroy_v2(void* e) { delete (int*)e; return OK; }
CUresult cuStreamWaitEvent(void*, void*, unsigned) { return OK; }
CUresult cuFuncSetAttribute(void*, int, int) { return OK; }

// ---- NVRTC ---------------------------------------------------------------

struct Program { bool bf16 = false; };
int nvrtcVersion(int* major, int* minor) { *major = 12; *minor = 99; return 0; }
int nvrtcCreateProgram(Program** p, const char*, const char*, int, const char* const*, const char* const*) { *p = new Program; return 0; }
int nvrtcCompileProgram(Program* p, int n, const char* const* opts) {
    for (int i = 0; i < n; i++) if (std::strcmp(opts[i], "-DBRAID_BF16=1") == 0) p->bf16 = true;
    return 0;
}
int nvrtcGetCUBINSize(Program*, size_t* n) { *n = 8; return 0; }
int nvrtcGetCUBIN(Program* p, char* out) { std::memcpy(out, p->bf16 ? "EMU-b16" : "EMU-f32", 8); return 0; }
int nvrtcGetProgramLogSize(Program*, size_t* n) { *n = 1; return 0; }
int nvrtcGetProgramLog(Program*, char* log) { log[0] = 0; return 0; }
int nvrtcDestroyProgram(Program** p) { delete *p; *p = nullptr; return 0; }
const char* nvrtcGetErrorString(int) { return "NVRTC_EMULATED"; }

// ---- cuBLAS ----------------------------------------------------------------

int cublasCreate_v2(void** h) { *h = new int(0); return 0; }
int cublasDestroy_v2(void* h) { delete (int*)h; return 0; }
int cublasSetStream_v2(void*, void*) { return 0; }
int cublasSetWorkspace_v2(void*, void*, size_t) { return 0; }
int cublasSetMathMode(void*, int) { return 0; }
int cublasGetProperty(int t, int* v) { *v = t == 0 ? 13 : 0; return 0; }

static float rd(const void* p, int type, long i) {
    if (type == 14) return __uint_as_float(((unsigned)((const unsigned short*)p)[i]) << 16);
    return ((const float*)p)[i];
}
static void wr(void* p, int type, long i, float v) {
    if (type == 14) ((unsigned short*)p)[i] = f32::f2bf(v);
    else ((float*)p)[i] = v;
}
// Column-major C (m×n) = alpha·op(A)·op(B) + beta·C, as cuBLAS defines it.
static void gemm(int ta, int tb, int m, int n, int k, float alpha, const void* A, int at, int lda, long sa,
                 const void* B, int bt, int ldb, long sb, float beta, void* C, int ct, int ldc, long sc, int batch) {
    for (int q = 0; q < batch; q++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double s = 0;
                for (int l = 0; l < k; l++) {
                    float a = ta ? rd(A, at, q * sa + l + (long)i * lda) : rd(A, at, q * sa + i + (long)l * lda);
                    float b = tb ? rd(B, bt, q * sb + j + (long)l * ldb) : rd(B, bt, q * sb + l + (long)j * ldb);
                    s += (double)a * b;
                }
                long ci = q * sc + i + (long)j * ldc;
                float v = alpha * (float)s;
                if (beta != 0) v += beta * rd(C, ct, ci);
                wr(C, ct, ci, v);
            }
}
int cublasGemmEx(void*, int ta, int tb, int m, int n, int k, const float* alpha, const void* A, int at, int lda,
                 const void* B, int bt, int ldb, const float* beta, void* C, int ct, int ldc, int, int) {
    gemm(ta, tb, m, n, k, *alpha, A, at, lda, 0, B, bt, ldb, 0, *beta, C, ct, ldc, 0, 1);
    return 0;
}
int cublasGemmStridedBatchedEx(void*, int ta, int tb, int m, int n, int k, const float* alpha, const void* A, int at, int lda, long long sa,
                               const void* B, int bt, int ldb, long long sb, const float* beta, void* C, int ct, int ldc, long long sc,
                               int batch, int, int) {
    gemm(ta, tb, m, n, k, *alpha, A, at, lda, sa, B, bt, ldb, sb, *beta, C, ct, ldc, sc, batch);
    return 0;
}
}
