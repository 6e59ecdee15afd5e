// braid's CUDA C kernels for a GPT-2 training step, compiled at run time by
// NVRTC for the device's architecture (package cuda, kernels.go). They are
// the GPU counterparts of package kernels' float32 CPU kernels, which stay
// the reference: the tests run both and compare.
//
// BRAID_BF16 selects the activation type act_t: 1 for bfloat16 (mixed
// precision like PyTorch's autocast: the GEMMs' inputs and outputs), 0 for
// float. Master weights, gradients, optimizer moments, the residual stream,
// LayerNorm statistics, softmax and the loss are float32 in both.
//
// Shapes are (B, T, C) as in package kernels, row-major. Every kernel
// bounds-checks its index; none allocates. No headers: NVRTC provides the
// built-ins, and bfloat16 is handled as raw 16-bit patterns.

#ifndef BRAID_BF16
#define BRAID_BF16 0
#endif

__device__ __forceinline__ float bf2f(unsigned short x) { return __uint_as_float(((unsigned int)x) << 16); }
// f2bf rounds to nearest even; NaN stays NaN.
__device__ __forceinline__ unsigned short f2bf(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

#if BRAID_BF16
typedef unsigned short act_t;
__device__ __forceinline__ float ld(const act_t* p, long i) { return bf2f(p[i]); }
__device__ __forceinline__ void st(act_t* p, long i, float v) { p[i] = f2bf(v); }
#else
typedef float act_t;
__device__ __forceinline__ float ld(const act_t* p, long i) { return p[i]; }
__device__ __forceinline__ void st(act_t* p, long i, float v) { p[i] = v; }
#endif

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// block_sum returns the sum of v over the block (blockDim.x a multiple of
// 32, at most 1024) to every thread. sh holds 32 floats of shared memory.
__device__ float block_sum(float v, float* sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}
__device__ float block_max(float v, float* sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -3.402823466e38f;
    return warp_max(v);
}

// Every buffer holds fewer than 2^31 elements (the host checks), so indices
// are 32-bit: 64-bit division and remainder cost far more on a GPU.
#define GRID_LOOP(i, n) for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += gridDim.x * blockDim.x)

// ---- elementwise -------------------------------------------------------

// axpy: out = a·x + y (the doctor's test kernel).
extern "C" __global__ void axpy(float* out, const float* x, const float* y, float a, int n) {
    GRID_LOOP(i, n) out[i] = a * x[i] + y[i];
}

extern "C" __global__ void fill_act(act_t* out, float v, int n) {
    GRID_LOOP(i, n) st(out, i, v);
}

extern "C" __global__ void cast_to_act(act_t* out, const float* in, int n) {
    GRID_LOOP(i, n) st(out, i, in[i]);
}

// residual_forward: out (N, OC) = a + b + bias: the residual stream
// (float) plus a projection's output and its bias (the projection's GEMM
// leaves the bias to its consumer).
extern "C" __global__ void residual_forward(float* out, const float* a, const act_t* b, const float* bias, int n, int OC) {
    GRID_LOOP(i, n) out[i] = a[i] + (ld(b, i) + bias[i % OC]);
}

// GELU with GPT-2's tanh approximation, written as x·σ(2u), u = c(x + k x³),
// as package kernels computes it.
#define GELU_C 0.7978845608028654f
#define GELU_K 0.044715f
extern "C" __global__ void gelu_forward(act_t* out, act_t* inp, const float* bias, int n, int OC) {
    GRID_LOOP(i, n) {
        // The projection's bias is added here and the sum stored back: the
        // backward pass needs the pre-activation as GELU saw it.
        st(inp, i, ld(inp, i) + bias[i % OC]);
        float x = ld(inp, i);
        float u = GELU_C * (x + GELU_K * x * x * x);
        st(out, i, x / (1.0f + expf(-2.0f * u)));
    }
}
// gelu_backward: dinp = GELU'(inp)·dout (overwrites dinp).
extern "C" __global__ void gelu_backward(act_t* dinp, const act_t* inp, const act_t* dout, int n) {
    GRID_LOOP(i, n) {
        float x = ld(inp, i);
        float u = GELU_C * (x + GELU_K * x * x * x);
        float s = 1.0f / (1.0f + expf(-2.0f * u));
        float g = s + x * s * (1.0f - s) * 2.0f * GELU_C * (1.0f + 3.0f * GELU_K * x * x);
        st(dinp, i, g * ld(dout, i));
    }
}

// ---- embeddings ----------------------------------------------------------

// encoder_forward: out (BT, C) = wte[tokens] + wpe[t].
extern "C" __global__ void encoder_forward(float* out, const int* tokens, const float* wte, const float* wpe, int BT, int T, int C) {
    GRID_LOOP(i, BT * C) {
        int bt = i / C, c = i % C;
        out[i] = wte[(long)tokens[bt] * C + c] + wpe[(long)(bt % T) * C + c];
    }
}

// encoder_backward_wpe: dwpe (T, C) += Σ_b dout (B, T, C), summed over b
// in order.
extern "C" __global__ void encoder_backward_wpe(float* dwpe, const float* dout, int B, int T, int C) {
    GRID_LOOP(i, T * C) {
        float s = 0.0f;
        for (int b = 0; b < B; b++) s += dout[(long)b * T * C + i];
        dwpe[i] += s;
    }
}

// encoder_backward_wte: dwte[token] += Σ dout rows of that token. One block
// per distinct token u (tokens[u]), whose positions are
// order[starts[u]..starts[u+1]), summed in that order: deterministic, no
// atomics.
extern "C" __global__ void encoder_backward_wte(float* dwte, const float* dout, const int* order, const int* starts, const int* utok, int C) {
    int u = blockIdx.x;
    int lo = starts[u], hi = starts[u + 1];
    long row = (long)utok[u] * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float s = 0.0f;
        for (int j = lo; j < hi; j++) s += dout[(long)order[j] * C + c];
        dwte[row + c] += s;
    }
}

// ---- LayerNorm (one warp per row) -------------------------------------

#define LN_EPS 1e-5f

// layernorm_forward: out (N, C) = (inp − mean)·rstd·w + b, with mean and
// rstd (N) saved for backward; inp is the float residual stream.
extern "C" __global__ void layernorm_forward(act_t* out, float* mean, float* rstd, const float* inp, const float* w, const float* b, int N, int C) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += x[c];
    float m = warp_sum(s) / C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) { float d = x[c] - m; ss += d * d; }
    float r = rsqrtf(warp_sum(ss) / C + LN_EPS);
    act_t* o = out + (long)row * C;
    for (int c = lane; c < C; c += 32) st(o, c, (x[c] - m) * r * w[c] + b[c]);
    if (lane == 0) { mean[row] = m; rstd[row] = r; }
}

// layernorm_backward: dinp (N, C) += ∂L/∂inp given dout (N, C); writes
// dwx (N, C) = dout·x̂, whose column sums (a GEMV) are the weight's
// gradient; the bias's are dout's column sums.
extern "C" __global__ void layernorm_backward(float* dinp, float* dwx, const act_t* dout, const float* inp, const float* w, const float* mean, const float* rstd, int N, int C) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    long off = (long)row * C;
    const float* x = inp + off;
    float m = mean[row], r = rstd[row];
    float sd = 0.0f, sdx = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xh = (x[c] - m) * r, dn = ld(dout, off + c) * w[c];
        sd += dn;
        sdx += dn * xh;
    }
    sd = warp_sum(sd) / C;
    sdx = warp_sum(sdx) / C;
    for (int c = lane; c < C; c += 32) {
        float xh = (x[c] - m) * r, d = ld(dout, off + c), dn = d * w[c];
        dinp[off + c] += (dn - sd - xh * sdx) * r;
        dwx[off + c] = d * xh;
    }
}

// ---- attention ---------------------------------------------------------

// bhtd splits i, an index into a (B, NH, T, hs) tensor, into its coordinates.
__device__ __forceinline__ void bhtd(int i, int T, int NH, int hs, int* b, int* h, int* t, int* d) {
    *d = i % hs;
    i /= hs;
    *t = i % T;
    i /= T;
    *h = i % NH;
    *b = i / NH;
}

// permute: qkv (B, T, 3, NH, hs) + bias (3C) → q, k, v (B, NH, T, hs).
extern "C" __global__ void permute_qkv(act_t* q, act_t* k, act_t* v, const act_t* qkv, const float* bias, int B, int T, int NH, int hs) {
    int C = NH * hs;
    GRID_LOOP(i, B * NH * T * hs) {
        int b, h, t, d;
        bhtd(i, T, NH, hs, &b, &h, &t, &d);
        long src = ((long)b * T + t) * 3 * C + h * hs + d;
        int c = h * hs + d;
        st(q, i, ld(qkv, src) + bias[c]);
        st(k, i, ld(qkv, src + C) + bias[C + c]);
        st(v, i, ld(qkv, src + 2 * C) + bias[2 * C + c]);
    }
}
// permute_qkv_backward: the inverse, dq, dk, dv → dqkv (overwritten).
extern "C" __global__ void permute_qkv_backward(act_t* dqkv, const act_t* dq, const act_t* dk, const act_t* dv, int B, int T, int NH, int hs) {
    int C = NH * hs;
    GRID_LOOP(i, B * NH * T * hs) {
        int b, h, t, d;
        bhtd(i, T, NH, hs, &b, &h, &t, &d);
        long dst = ((long)b * T + t) * 3 * C + h * hs + d;
        dqkv[dst] = dq[i];
        dqkv[dst + C] = dk[i];
        dqkv[dst + 2 * C] = dv[i];
    }
}
// unpermute: y (B, NH, T, hs) → out (B, T, NH·hs).
extern "C" __global__ void unpermute(act_t* out, const act_t* y, int B, int T, int NH, int hs) {
    GRID_LOOP(i, B * NH * T * hs) {
        int b, h, t, d;
        bhtd(i, T, NH, hs, &b, &h, &t, &d);
        out[((long)b * T + t) * NH * hs + h * hs + d] = y[i];
    }
}
// unpermute_backward: dout (B, T, NH·hs) → dy (B, NH, T, hs).
extern "C" __global__ void unpermute_backward(act_t* dy, const act_t* dout, int B, int T, int NH, int hs) {
    GRID_LOOP(i, B * NH * T * hs) {
        int b, h, t, d;
        bhtd(i, T, NH, hs, &b, &h, &t, &d);
        dy[i] = dout[((long)b * T + t) * NH * hs + h * hs + d];
    }
}

// softmax_forward: att (rows, T) = causal softmax of scale·preatt, one warp
// per row; row r is query position r % T and sees keys 0..r%T; the rest of
// the row is written 0.
extern "C" __global__ void softmax_forward(act_t* att, const float* preatt, float scale, int rows, int T) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    int t = row % T;
    const float* x = preatt + (long)row * T;
    act_t* o = att + (long)row * T;
    // One pass for the maximum and the sum (online: the sum is rescaled
    // when the maximum grows), one to write.
    float mx = -3.402823466e38f, s = 0.0f;
    for (int j = lane; j <= t; j += 32) {
        float v = x[j] * scale;
        if (v > mx) { s = s * expf(mx - v) + 1.0f; mx = v; }
        else s += expf(v - mx);
    }
    for (int off = 16; off > 0; off >>= 1) {
        float om = __shfl_xor_sync(0xffffffffu, mx, off), os = __shfl_xor_sync(0xffffffffu, s, off);
        float m2 = fmaxf(mx, om);
        s = (s == 0.0f ? 0.0f : s * expf(mx - m2)) + (os == 0.0f ? 0.0f : os * expf(om - m2));
        mx = m2;
    }
    float inv = 1.0f / s;
    for (int j = lane; j < T; j += 32) st(o, j, j <= t ? expf(x[j] * scale - mx) * inv : 0.0f);
}

// softmax_backward: dpreatt (rows, T) = scale·att·(datt − Σ att·datt) on
// the causal part, 0 elsewhere (overwritten).
extern "C" __global__ void softmax_backward(act_t* dpreatt, const act_t* att, const float* datt, float scale, int rows, int T) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    int t = row % T;
    long off = (long)row * T;
    float s = 0.0f;
    for (int j = lane; j <= t; j += 32) s += ld(att, off + j) * datt[off + j];
    s = warp_sum(s);
    for (int j = lane; j < T; j += 32)
        st(dpreatt, off + j, j <= t ? scale * ld(att, off + j) * (datt[off + j] - s) : 0.0f);
}

// ---- the Llama family: RMSNorm, rotary embeddings, grouped-query heads, SwiGLU

// rmsnorm_forward: out (N, C) = inp·rstd·w, rstd = 1/√(mean(inp²) + eps)
// saved (N) for backward; inp is the float residual stream. One warp per
// row, as layernorm_forward.
extern "C" __global__ void rmsnorm_forward(act_t* out, float* rstd, const float* inp, const float* w, int N, int C, float eps) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) ss += x[c] * x[c];
    float r = rsqrtf(warp_sum(ss) / C + eps);
    act_t* o = out + (long)row * C;
    for (int c = lane; c < C; c += 32) st(o, c, x[c] * r * w[c]);
    if (lane == 0) rstd[row] = r;
}

// rmsnorm_backward: dinp (N, C) += rstd·(g − x·rstd²·mean(g·x)) with
// g = dout·w; writes dwx (N, C) = dout·x·rstd, whose column sums are the
// weight's gradient.
extern "C" __global__ void rmsnorm_backward(float* dinp, float* dwx, const act_t* dout, const float* inp, const float* w, const float* rstd, int N, int C) {
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= N) return;
    long off = (long)row * C;
    const float* x = inp + off;
    float r = rstd[row], gx = 0.0f;
    for (int c = lane; c < C; c += 32) gx += ld(dout, off + c) * w[c] * x[c];
    float k = r * r * warp_sum(gx) / C;
    for (int c = lane; c < C; c += 32) {
        float d = ld(dout, off + c);
        dinp[off + c] += r * (d * w[c] - x[c] * k);
        dwx[off + c] = d * x[c] * r;
    }
}

// permute_qkv_gqa: qkv (B, T, Q+2K) [q | k | v] of NH query heads and KVH
// key/value heads of hd channels (Q = NH·hd, K = KVH·hd), plus bias (Q+2K)
// → q, k, v (B, NH, T, hd), with rotary embeddings applied to q and k
// (Hugging Face's rotate_half: channel j < hd/2 pairs with j + hd/2, the
// pair rotated by θ_j·t; cos, sin (≥ T, hd/2)) and each key/value head
// repeated for the NH/KVH query heads that share it.
extern "C" __global__ void permute_qkv_gqa(act_t* q, act_t* k, act_t* v, const act_t* qkv, const float* bias, const float* cos, const float* sin,
                                           int B, int T, int NH, int KVH, int hd) {
    int Q = NH * hd, W = (NH + 2 * KVH) * hd, half = hd / 2;
    GRID_LOOP(i, B * NH * T * hd) {
        int b, h, t, d;
        bhtd(i, T, NH, hd, &b, &h, &t, &d);
        int kh = h / (NH / KVH), j = d < half ? d : d - half;
        float cs = cos[t * half + j], sn = sin[t * half + j];
        long row = ((long)b * T + t) * W;
        int qc = h * hd, kc = Q + kh * hd, vc = Q + KVH * hd + kh * hd;
        // x[d]·cos ∓ x[pair]·sin: the first half subtracts, the second adds
        int pd = d < half ? d + half : d - half;
        float sg = d < half ? -sn : sn;
        st(q, i, (ld(qkv, row + qc + d) + bias[qc + d]) * cs + (ld(qkv, row + qc + pd) + bias[qc + pd]) * sg);
        st(k, i, (ld(qkv, row + kc + d) + bias[kc + d]) * cs + (ld(qkv, row + kc + pd) + bias[kc + pd]) * sg);
        st(v, i, ld(qkv, row + vc + d) + bias[vc + d]);
    }
}

// permute_qkv_gqa_backward: the gradient of permute_qkv_gqa, dq, dk, dv
// (B, NH, T, hd) → dqkv (B, T, Q+2K), overwritten: each key/value head's
// gradient sums its query heads', and q's and k's are rotated back by
// −θ_j·t.
extern "C" __global__ void permute_qkv_gqa_backward(act_t* dqkv, const act_t* dq, const act_t* dk, const act_t* dv, const float* cos, const float* sin,
                                                    int B, int T, int NH, int KVH, int hd) {
    int Q = NH * hd, W = (NH + 2 * KVH) * hd, half = hd / 2, rep = NH / KVH;
    GRID_LOOP(i, B * T * W) {
        int c = i % W, bt = i / W, t = bt % T, b = bt / T;
        int kind = c < Q ? 0 : c < Q + KVH * hd ? 1 : 2;
        int hc = kind == 0 ? c : kind == 1 ? c - Q : c - Q - KVH * hd;
        int h = hc / hd, d = hc % hd;
        int j = d < half ? d : d - half, pd = d < half ? d + half : d - half;
        float cs = cos[t * half + j], sn = sin[t * half + j];
        // the transpose of the rotation: dx[d] = dy[d]·cos ± dy[pair]·sin
        float sg = d < half ? sn : -sn;
        float g = 0.0f;
        if (kind == 0) {
            long base = (((long)b * NH + h) * T + t) * hd;
            g = ld(dq, base + d) * cs + ld(dq, base + pd) * sg;
        } else {
            for (int r = 0; r < rep; r++) {
                long base = (((long)b * NH + h * rep + r) * T + t) * hd;
                g += kind == 1 ? ld(dk, base + d) * cs + ld(dk, base + pd) * sg : ld(dv, base + d);
            }
        }
        st(dqkv, i, g);
    }
}

// swiglu_forward: out (N, H) = silu(gate)·up for rows gu (N, 2H) [gate | up].
extern "C" __global__ void swiglu_forward(act_t* out, const act_t* gu, int N, int H) {
    GRID_LOOP(i, N * H) {
        int n = i / H, j = i % H;
        float g = ld(gu, (long)n * 2 * H + j), u = ld(gu, (long)n * 2 * H + H + j);
        st(out, i, g / (1.0f + expf(-g)) * u);
    }
}

// swiglu_backward: dgu (N, 2H) = the gradient of swiglu_forward given
// dout (N, H), overwritten: dgate = dout·up·σ(g)·(1 + g·(1 − σ(g))),
// dup = dout·silu(g).
extern "C" __global__ void swiglu_backward(act_t* dgu, const act_t* dout, const act_t* gu, int N, int H) {
    GRID_LOOP(i, N * H) {
        int n = i / H, j = i % H;
        long gi = (long)n * 2 * H + j;
        float g = ld(gu, gi), u = ld(gu, gi + H), d = ld(dout, i);
        float s = 1.0f / (1.0f + expf(-g));
        st(dgu, gi, d * u * s * (1.0f + g * (1.0f - s)));
        st(dgu, gi + H, d * g * s);
    }
}

// ---- cross-entropy (one block per row) -------------------------------

// crossentropy_forward: for each row n of logits (N, V) with row stride
// ldv: lse[n] = log Σ exp(logits), losses[n] = lse − logits[target] (0 where
// the target is −1).
extern "C" __global__ void crossentropy_forward(float* losses, float* lse, const act_t* logits, const int* targets, int N, int V, int ldv) {
    __shared__ float sh[32];
    int n = blockIdx.x;
    if (n >= N) return;
    long off = (long)n * ldv;
    // One pass: each thread keeps a running maximum and a sum rescaled when
    // the maximum grows; the block then combines them.
    float m0 = -3.402823466e38f, s0 = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float v = ld(logits, off + j);
        if (v > m0) { s0 = s0 * expf(m0 - v) + 1.0f; m0 = v; }
        else s0 += expf(v - m0);
    }
    float mx = block_max(m0, sh);
    float s = block_sum(s0 == 0.0f ? 0.0f : s0 * expf(m0 - mx), sh);
    if (threadIdx.x == 0) {
        float l = mx + logf(s);
        int tg = targets[n];
        lse[n] = l;
        losses[n] = tg >= 0 ? l - ld(logits, off + tg) : 0.0f;
    }
}

// crossentropy_backward: dlogits = (softmax(logits) − onehot(target))·dloss,
// 0 for rows whose target is −1 and in the row's padding (columns V..ldv),
// so that a GEMM may run over the padded width; dlogits may be logits (in
// place).
extern "C" __global__ void crossentropy_backward(act_t* dlogits, const act_t* logits, const float* lse, const int* targets, float dloss, int N, int V, int ldv) {
    int n = blockIdx.x;
    if (n >= N) return;
    long off = (long)n * ldv;
    int tg = targets[n];
    float l = lse[n];
    for (int j = threadIdx.x; j < ldv; j += blockDim.x) {
        float d = 0.0f;
        if (tg >= 0 && j < V) d = (expf(ld(logits, off + j) - l) - (j == tg ? 1.0f : 0.0f)) * dloss;
        st(dlogits, off + j, d);
    }
}

// ---- optimizer -----------------------------------------------------------

// sumsq_partials: partials[block] = Σ g² over the block's grid-stride
// share, in double. The host adds the partials in order.
extern "C" __global__ void sumsq_partials(double* partials, const float* g, int n) {
    __shared__ double sh[1024];
    double s = 0.0;
    GRID_LOOP(i, n) { double x = g[i]; s += x * x; }
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) sh[threadIdx.x] += sh[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = sh[0];
}

// adamw: one AdamW update of p (n) with gradient gscale·g, in the form of
// package kernels' AdamW; pact, if not null, receives the updated weights
// as act_t for the next forward pass.
extern "C" __global__ void adamw(float* p, act_t* pact, const float* g, float* m, float* v, int n,
                                 float b1, float b2, float eps, float decay, float stepSize, float bc2Sqrt, float gscale) {
    GRID_LOOP(i, n) {
        float gi = g[i] * gscale;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2Sqrt + eps;
        float pi = p[i] * decay - stepSize * mi / denom;
        p[i] = pi;
        if (pact) st(pact, i, pi);
    }
}
