// reference.h: plain sequential versions of the kernels of kernels.cu that
// synchronise threads (block or warp reductions), with the same parameters,
// for fakecuda.cc, which runs them instead of emulating thousands of
// threads. Included inside a namespace after kernels.cu (act_t, ld, st).
// kernels_test.cc checks them against the real kernels on the emulator.

static void ref_layernorm_forward(act_t* out, float* mean, float* rstd, const float* inp, const float* w, const float* b, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float* x = inp + (long)n * C;
        float s = 0;
        for (int c = 0; c < C; c++) s += x[c];
        float m = s / C, ss = 0;
        for (int c = 0; c < C; c++) ss += (x[c] - m) * (x[c] - m);
        float r = 1.0f / sqrtf(ss / C + 1e-5f);
        for (int c = 0; c < C; c++) st(out, (long)n * C + c, (x[c] - m) * r * w[c] + b[c]);
        mean[n] = m;
        rstd[n] = r;
    }
}

static void ref_layernorm_backward(float* dinp, float* dwx, const act_t* dout, const float* inp, const float* w, const float* mean, const float* rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        long off = (long)n * C;
        float m = mean[n], r = rstd[n], sd = 0, sdx = 0;
        for (int c = 0; c < C; c++) {
            float xh = (inp[off + c] - m) * r, dn = ld(dout, off + c) * w[c];
            sd += dn;
            sdx += dn * xh;
        }
        sd /= C;
        sdx /= C;
        for (int c = 0; c < C; c++) {
            float xh = (inp[off + c] - m) * r, d = ld(dout, off + c);
            dinp[off + c] += (d * w[c] - sd - xh * sdx) * r;
            dwx[off + c] = d * xh;
        }
    }
}

static void ref_rmsnorm_forward(act_t* out, float* rstd, const float* inp, const float* w, int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float* x = inp + (long)n * C;
        float ss = 0;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float r = 1.0f / sqrtf(ss / C + eps);
        for (int c = 0; c < C; c++) st(out, (long)n * C + c, x[c] * r * w[c]);
        rstd[n] = r;
    }
}

static void ref_rmsnorm_backward(float* dinp, float* dwx, const act_t* dout, const float* inp, const float* w, const float* rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        long off = (long)n * C;
        float r = rstd[n], gx = 0;
        for (int c = 0; c < C; c++) gx += ld(dout, off + c) * w[c] * inp[off + c];
        float k = r * r * gx / C;
        for (int c = 0; c < C; c++) {
            float d = ld(dout, off + c);
            dinp[off + c] += r * (d * w[c] - inp[off + c] * k);
            dwx[off + c] = d * inp[off + c] * r;
        }
    }
}

static void ref_softmax_forward(act_t* att, const float* preatt, float scale, int rows, int T) {
    for (int row = 0; row < rows; row++) {
        int t = row % T;
        const float* x = preatt + (long)row * T;
        float mx = -3.402823466e38f, s = 0;
        for (int j = 0; j <= t; j++) mx = fmaxf(mx, x[j] * scale);
        for (int j = 0; j <= t; j++) s += expf(x[j] * scale - mx);
        for (int j = 0; j < T; j++) st(att, (long)row * T + j, j <= t ? expf(x[j] * scale - mx) / s : 0.0f);
    }
}

static void ref_softmax_backward(act_t* dpreatt, const act_t* att, const float* datt, float scale, int rows, int T) {
    for (int row = 0; row < rows; row++) {
        int t = row % T;
        long off = (long)row * T;
        float s = 0;
        for (int j = 0; j <= t; j++) s += ld(att, off + j) * datt[off + j];
        for (int j = 0; j < T; j++) st(dpreatt, off + j, j <= t ? scale * ld(att, off + j) * (datt[off + j] - s) : 0.0f);
    }
}

static void ref_crossentropy_forward(float* losses, float* lse, const act_t* logits, const int* targets, int N, int V, int ldv) {
    for (int n = 0; n < N; n++) {
        long off = (long)n * ldv;
        float mx = -3.402823466e38f, s = 0;
        for (int j = 0; j < V; j++) mx = fmaxf(mx, ld(logits, off + j));
        for (int j = 0; j < V; j++) s += expf(ld(logits, off + j) - mx);
        float l = mx + logf(s);
        lse[n] = l;
        losses[n] = targets[n] >= 0 ? l - ld(logits, off + targets[n]) : 0.0f;
    }
}

// ref_sumsq_partials gives each of gridDim.x partials its block's share of
// the grid-stride loop, as the kernel does (in another order).
static void ref_sumsq_partials(double* partials, const float* g, int n) {
    long stride = (long)gridDim.x * blockDim.x;
    for (unsigned b = 0; b < gridDim.x; b++) {
        double s = 0;
        for (unsigned t = 0; t < blockDim.x; t++)
            for (long i = (long)b * blockDim.x + t; i < n; i += stride) s += (double)g[i] * g[i];
        partials[b] = s;
    }
}
