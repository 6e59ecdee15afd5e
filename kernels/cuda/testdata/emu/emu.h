// emu.h runs braid's CUDA C kernels (kernels.cu) on the CPU, so that their
// arithmetic is checked where there is no GPU (TestKernelsOnTheEmulator).
// Each block runs as blockDim.x OS threads, blocks one after another:
// __shared__ variables become statics (one block alive at a time),
// __syncthreads is a barrier of the block's threads, and the warp
// shuffles exchange values through a per-warp slot array between two
// barriers of the warp's 32 threads. Only what kernels.cu uses is here.
#pragma once
#include <barrier>
#include <cmath>
#include <math.h>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct emu_dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local emu_dim3 threadIdx;
inline emu_dim3 blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

inline std::unique_ptr<std::barrier<>> emu_block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> emu_warp_barriers;
inline float emu_slots[32][32];

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int off) {
    unsigned w = threadIdx.x / 32, lane = threadIdx.x % 32;
    emu_slots[w][lane] = v;
    emu_warp_barriers[w]->arrive_and_wait();
    float r = emu_slots[w][lane ^ off];
    emu_warp_barriers[w]->arrive_and_wait();
    return r;
}

inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// expf, logf, sqrtf, fmaxf come from <math.h> (through <cmath>).

// emu_launch runs kernel on grid × block threads.
template <typename F, typename... A>
void emu_launch(int grid, int block, F kernel, A... args) {
    blockDim.x = block;
    gridDim.x = grid;
    for (int b = 0; b < grid; b++) {
        blockIdx.x = b;
        emu_block_barrier = std::make_unique<std::barrier<>>(block);
        emu_warp_barriers.clear();
        for (int w = 0; w < (block + 31) / 32; w++) emu_warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
        std::vector<std::thread> ts;
        for (int t = 0; t < block; t++) {
            ts.emplace_back([&, t] {
                threadIdx.x = t;
                kernel(args...);
                // A thread that returns early leaves the barriers of the
                // block and its warp so that the others do not wait for it.
                emu_block_barrier->arrive_and_drop();
                emu_warp_barriers[t / 32]->arrive_and_drop();
            });
        }
        for (auto& th : ts) th.join();
    }
}
