// Checks every kernel of kernels.cu, run on the CPU by emu.h, against a
// plain reference, at the precision it is compiled for (-DBRAID_BF16=0 or
// 1). Prints one line per kernel; exits 1 if any is off. Built and run by
// TestKernelsOnTheEmulator (package cuda).
#include <cstdio>
#include <random>
#include <string>
#include <algorithm>
#include "emu.h"
#include "../../kernels.cu"
#include "reference.h"

static std::mt19937 rng(7);
static int failures = 0;
#if BRAID_BF16
static const double TOL = 2e-2;
#else
static const double TOL = 2e-5;
#endif

static std::vector<float> randf(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}
static std::vector<act_t> toact(const std::vector<float>& v) {
    std::vector<act_t> a(v.size());
    for (size_t i = 0; i < v.size(); i++) st(a.data(), i, v[i]);
    return a;
}
static std::vector<float> fromact(const std::vector<act_t>& a) {
    std::vector<float> v(a.size());
    for (size_t i = 0; i < a.size(); i++) v[i] = ld(a.data(), i);
    return v;
}
// check compares got with want by ‖got − want‖ / ‖want‖ (NaN fails).
static void check(const char* name, const std::vector<float>& got, const std::vector<float>& want, double tol = TOL) {
    double num = 0, den = 0;
    for (size_t i = 0; i < want.size(); i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    double e = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    bool ok = e <= tol;
    if (!ok) failures++;
    std::printf("%-28s %s  relative error %.2e (tolerance %.0e)\n", name, ok ? "ok  " : "FAIL", e, tol);
}
static int blocks(long n, int t) { return (int)std::min<long>((n + t - 1) / t, 64); }

int main() {
    const int B = 2, T = 12, NH = 3, hs = 8, C = NH * hs, BT = B * T, OC = 3 * C;
    // residual_forward
    {
        auto a = randf(BT * C), bf = randf(BT * C), bias = randf(C);
        auto b = toact(bf);
        std::vector<float> out(BT * C), want(BT * C);
        emu_launch(blocks(BT * C, 64), 64, residual_forward, out.data(), a.data(), b.data(), bias.data(), BT * C, C);
        for (int i = 0; i < BT * C; i++) want[i] = a[i] + (ld(b.data(), i) + bias[i % C]);
        check("residual_forward", out, want);
    }
    // gelu_forward (adds the bias into inp) and gelu_backward
    {
        auto xf = randf(BT * OC, 2.0f), bias = randf(OC);
        auto x = toact(xf), x0 = x;
        std::vector<act_t> out(BT * OC);
        emu_launch(blocks(BT * OC, 64), 64, gelu_forward, out.data(), x.data(), bias.data(), BT * OC, OC);
        std::vector<float> want(BT * OC), pre(BT * OC);
        for (int i = 0; i < BT * OC; i++) {
            act_t s; st(&s, 0, ld(x0.data(), i) + bias[i % OC]);
            float v = ld(&s, 0);
            pre[i] = v;
            double u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
            want[i] = (float)(0.5 * v * (1 + std::tanh(u)));
        }
        check("gelu_forward (pre-activation)", fromact(x), pre);
        check("gelu_forward", fromact(out), want);
        auto doutf = randf(BT * OC);
        auto dout = toact(doutf);
        std::vector<act_t> dinp(BT * OC);
        emu_launch(blocks(BT * OC, 64), 64, gelu_backward, dinp.data(), x.data(), dout.data(), BT * OC);
        for (int i = 0; i < BT * OC; i++) {
            double v = ld(x.data(), i), h = 1e-3;
            auto g = [](double z) { return 0.5 * z * (1 + std::tanh(0.7978845608028654 * (z + 0.044715 * z * z * z))); };
            want[i] = (float)((g(v + h) - g(v - h)) / (2 * h) * ld(dout.data(), i));
        }
        check("gelu_backward", fromact(dinp), want, std::max(TOL, 1e-4));
    }
    // encoder forward and backward
    {
        const int V = 17;
        std::vector<int> tok(BT);
        for (auto& t : tok) t = rng() % V;
        auto wte = randf(V * C), wpe = randf(T * C), dout = randf(BT * C);
        std::vector<float> out(BT * C), want(BT * C);
        emu_launch(blocks(BT * C, 64), 64, encoder_forward, out.data(), (const int*)tok.data(), wte.data(), wpe.data(), BT, T, C);
        for (int bt = 0; bt < BT; bt++)
            for (int c = 0; c < C; c++) want[bt * C + c] = wte[tok[bt] * C + c] + wpe[(bt % T) * C + c];
        check("encoder_forward", out, want, 1e-6);
        std::vector<float> dwpe(T * C, 0.5f), wpeWant(T * C, 0.5f), dwte(V * C, 0.25f), wteWant(V * C, 0.25f);
        emu_launch(blocks(T * C, 64), 64, encoder_backward_wpe, dwpe.data(), dout.data(), B, T, C);
        // positions grouped by token, as cudamodel's uploadTokenOrder does
        std::vector<int> order, starts, utok;
        for (int v = 0; v < V; v++) {
            bool any = false;
            for (int i = 0; i < BT; i++)
                if (tok[i] == v) { if (!any) { starts.push_back(order.size()); utok.push_back(v); any = true; } order.push_back(i); }
        }
        starts.push_back(BT);
        emu_launch((int)utok.size(), 32, encoder_backward_wte, dwte.data(), dout.data(), (const int*)order.data(), (const int*)starts.data(), (const int*)utok.data(), C);
        for (int bt = 0; bt < BT; bt++)
            for (int c = 0; c < C; c++) {
                wpeWant[(bt % T) * C + c] += dout[bt * C + c];
                wteWant[tok[bt] * C + c] += dout[bt * C + c];
            }
        check("encoder_backward_wpe", dwpe, wpeWant, 1e-6);
        check("encoder_backward_wte", dwte, wteWant, 1e-6);
    }
    // layernorm forward and backward
    {
        auto x = randf(BT * C, 3.0f), w = randf(C), b = randf(C), doutf = randf(BT * C);
        auto dout = toact(doutf);
        std::vector<act_t> out(BT * C);
        std::vector<float> mean(BT), rstd(BT), want(BT * C), dinp(BT * C, 0.1f), dwx(BT * C), dinpWant(BT * C), dwxWant(BT * C);
        emu_launch((BT + 7) / 8, 256, layernorm_forward, out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), BT, C);
        for (int n = 0; n < BT; n++) {
            double m = 0, v = 0;
            for (int c = 0; c < C; c++) m += x[n * C + c];
            m /= C;
            for (int c = 0; c < C; c++) v += (x[n * C + c] - m) * (x[n * C + c] - m);
            double r = 1 / std::sqrt(v / C + 1e-5);
            double sd = 0, sdx = 0;
            for (int c = 0; c < C; c++) {
                double xh = (x[n * C + c] - m) * r;
                want[n * C + c] = (float)(xh * w[c] + b[c]);
                double dn = ld(dout.data(), n * C + c) * w[c];
                sd += dn; sdx += dn * xh;
            }
            sd /= C; sdx /= C;
            for (int c = 0; c < C; c++) {
                double xh = (x[n * C + c] - m) * r, d = ld(dout.data(), n * C + c);
                dinpWant[n * C + c] = (float)(0.1 + (d * w[c] - sd - xh * sdx) * r);
                dwxWant[n * C + c] = (float)(d * xh);
            }
        }
        check("layernorm_forward", fromact(out), want);
        emu_launch((BT + 7) / 8, 256, layernorm_backward, dinp.data(), dwx.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), BT, C);
        check("layernorm_backward dinp", dinp, dinpWant, std::max(TOL, 1e-5));
        check("layernorm_backward dwx", dwx, dwxWant, std::max(TOL, 1e-5));
    }
    // permutes (exact copies, plus the qkv bias)
    {
        auto qkvf = randf(BT * OC), bias = randf(OC);
        auto qkv = toact(qkvf);
        std::vector<act_t> q(BT * C), k(BT * C), v(BT * C), back(BT * OC), un(BT * C), y(BT * C);
        emu_launch(blocks(BT * C, 64), 64, permute_qkv, q.data(), k.data(), v.data(), (const act_t*)qkv.data(), bias.data(), B, T, NH, hs);
        std::vector<float> wq(BT * C), got(BT * C);
        for (int b = 0; b < B; b++) for (int h = 0; h < NH; h++) for (int t = 0; t < T; t++) for (int d = 0; d < hs; d++) {
            int i = ((b * NH + h) * T + t) * hs + d, src = (b * T + t) * OC + h * hs + d;
            act_t s; st(&s, 0, ld(qkv.data(), src + C) + bias[C + h * hs + d]);
            wq[i] = ld(&s, 0);
        }
        check("permute_qkv (k, with bias)", fromact(k), wq, 0);
        emu_launch(blocks(BT * C, 64), 64, permute_qkv_backward, back.data(), (const act_t*)q.data(), (const act_t*)k.data(), (const act_t*)v.data(), B, T, NH, hs);
        std::vector<float> wb(BT * OC);
        for (int i = 0; i < BT * OC; i++) {
            int c = i % OC;
            act_t s; st(&s, 0, ld(qkv.data(), i) + bias[c]);
            wb[i] = ld(&s, 0);
        }
        check("permute_qkv_backward", fromact(back), wb, 0);
        emu_launch(blocks(BT * C, 64), 64, unpermute, un.data(), (const act_t*)q.data(), B, T, NH, hs);
        emu_launch(blocks(BT * C, 64), 64, unpermute_backward, y.data(), (const act_t*)un.data(), B, T, NH, hs);
        check("unpermute round trip", fromact(y), fromact(q), 0);
    }
    // causal softmax forward and backward
    {
        const int rows = B * NH * T;
        auto pre = randf(rows * T, 4.0f), dattf = randf(rows * T);
        std::vector<act_t> att(rows * T), dpre(rows * T);
        const float scale = 0.35f;
        emu_launch((rows + 7) / 8, 256, softmax_forward, att.data(), pre.data(), scale, rows, T);
        std::vector<float> want(rows * T), dwant(rows * T);
        for (int r = 0; r < rows; r++) {
            int t = r % T;
            double mx = -1e30, s = 0;
            for (int j = 0; j <= t; j++) mx = std::max(mx, (double)pre[r * T + j] * scale);
            for (int j = 0; j <= t; j++) s += std::exp(pre[r * T + j] * scale - mx);
            for (int j = 0; j < T; j++) want[r * T + j] = j <= t ? (float)(std::exp(pre[r * T + j] * scale - mx) / s) : 0.0f;
        }
        check("softmax_forward", fromact(att), want);
        emu_launch((rows + 7) / 8, 256, softmax_backward, dpre.data(), (const act_t*)att.data(), dattf.data(), scale, rows, T);
        for (int r = 0; r < rows; r++) {
            int t = r % T;
            double s = 0;
            for (int j = 0; j <= t; j++) s += ld(att.data(), r * T + j) * dattf[r * T + j];
            for (int j = 0; j < T; j++) dwant[r * T + j] = j <= t ? (float)(scale * ld(att.data(), r * T + j) * (dattf[r * T + j] - s)) : 0.0f;
        }
        check("softmax_backward", fromact(dpre), dwant);
    }
    // cross-entropy forward and backward, rows padded from V to ldv
    {
        const int N = 5, V = 300, ldv = 320;
        auto lf = randf(N * ldv, 3.0f);
        auto logits = toact(lf);
        std::vector<int> tg = {3, -1, 299, 0, 150};
        std::vector<float> losses(N), lse(N), wl(N, 0), wlse(N);
        emu_launch(N, 512, crossentropy_forward, losses.data(), lse.data(), (const act_t*)logits.data(), (const int*)tg.data(), N, V, ldv);
        for (int n = 0; n < N; n++) {
            double mx = -1e30, s = 0;
            for (int j = 0; j < V; j++) mx = std::max(mx, (double)ld(logits.data(), n * ldv + j));
            for (int j = 0; j < V; j++) s += std::exp(ld(logits.data(), n * ldv + j) - mx);
            wlse[n] = (float)(mx + std::log(s));
            if (tg[n] >= 0) wl[n] = wlse[n] - ld(logits.data(), n * ldv + tg[n]);
        }
        check("crossentropy_forward lse", lse, wlse, 1e-5);
        check("crossentropy_forward loss", losses, wl, 1e-5);
        std::vector<float> wd(N * ldv, 0);
        for (int n = 0; n < N; n++)
            for (int j = 0; j < V; j++)
                if (tg[n] >= 0) wd[n * ldv + j] = (float)((std::exp(ld(logits.data(), n * ldv + j) - wlse[n]) - (j == tg[n])) * 0.25);
        emu_launch(N, 512, crossentropy_backward, logits.data(), (const act_t*)logits.data(), lse.data(), (const int*)tg.data(), 0.25f, N, V, ldv);
        check("crossentropy_backward (+ padding)", fromact(logits), wd);
    }
    // sum of squares and AdamW
    {
        const int n = 5000;
        auto g = randf(n);
        std::vector<double> parts(4);
        emu_launch(4, 256, sumsq_partials, parts.data(), (const float*)g.data(), n);
        double s = 0, w = 0;
        for (double p : parts) s += p;
        for (float x : g) w += (double)x * x;
        check("sumsq_partials", {(float)s}, {(float)w}, 1e-6);
        auto p = randf(n), m = randf(n, 0.1f), v0 = randf(n, 0.1f);
        for (auto& x : v0) x = x * x;
        auto p0 = p, m0 = m, v = v0;
        std::vector<act_t> pact(n);
        const float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, decay = 1 - 1e-3f * 0.1f, stepSize = 1e-3f / 0.19f, bc2 = std::sqrt(1 - 0.95f * 0.95f), gs = 0.5f;
        emu_launch(blocks(n, 256), 256, adamw, p.data(), pact.data(), (const float*)g.data(), m.data(), v.data(), n, b1, b2, eps, decay, stepSize, bc2, gs);
        std::vector<float> wp(n);
        for (int i = 0; i < n; i++) {
            float gi = g[i] * gs, mi = b1 * m0[i] + (1 - b1) * gi, vi = b2 * v0[i] + (1 - b2) * gi * gi;
            wp[i] = p0[i] * decay - stepSize * mi / (std::sqrt(vi) / bc2 + eps);
        }
        check("adamw", p, wp, 1e-6);
        check("adamw (activation copy)", fromact(pact), wp);
    }
    // The sequential references fakecuda.cc runs in place of the kernels
    // that synchronise threads compute what those kernels compute.
    {
        const int N = 24, CC = 40, rows = 30, TT = 10, V = 70, ldv = 80;
        auto x = randf(N * CC, 2.0f), w = randf(CC), b = randf(CC), d = randf(N * CC);
        auto dout = toact(d);
        std::vector<act_t> o1(N * CC), o2(N * CC);
        std::vector<float> m1(N), r1(N), m2(N), r2(N), di1(N * CC, 0.f), di2(N * CC, 0.f), dw1(N * CC), dw2(N * CC);
        emu_launch((N + 7) / 8, 256, layernorm_forward, o1.data(), m1.data(), r1.data(), x.data(), w.data(), b.data(), N, CC);
        ref_layernorm_forward(o2.data(), m2.data(), r2.data(), x.data(), w.data(), b.data(), N, CC);
        check("ref_layernorm_forward", fromact(o2), fromact(o1));
        emu_launch((N + 7) / 8, 256, layernorm_backward, di1.data(), dw1.data(), (const act_t*)dout.data(), x.data(), w.data(), m1.data(), r1.data(), N, CC);
        ref_layernorm_backward(di2.data(), dw2.data(), dout.data(), x.data(), w.data(), m1.data(), r1.data(), N, CC);
        check("ref_layernorm_backward", di2, di1, std::max(TOL, 1e-5));
        std::vector<float> rr1(N), rr2(N), rd1(N * CC, 0.f), rd2(N * CC, 0.f);
        emu_launch((N + 7) / 8, 256, rmsnorm_forward, o1.data(), rr1.data(), x.data(), w.data(), N, CC, 1e-5f);
        ref_rmsnorm_forward(o2.data(), rr2.data(), x.data(), w.data(), N, CC, 1e-5f);
        check("ref_rmsnorm_forward", fromact(o2), fromact(o1));
        emu_launch((N + 7) / 8, 256, rmsnorm_backward, rd1.data(), dw1.data(), (const act_t*)dout.data(), x.data(), w.data(), rr1.data(), N, CC);
        ref_rmsnorm_backward(rd2.data(), dw2.data(), dout.data(), x.data(), w.data(), rr1.data(), N, CC);
        check("ref_rmsnorm_backward", rd2, rd1, std::max(TOL, 1e-5));
        check("ref_rmsnorm_backward dwx", dw2, dw1, std::max(TOL, 1e-5));
        auto pre = randf(rows * TT, 3.0f), datt = randf(rows * TT);
        std::vector<act_t> a1(rows * TT), a2(rows * TT), p1(rows * TT), p2(rows * TT);
        emu_launch((rows + 7) / 8, 256, softmax_forward, a1.data(), pre.data(), 0.5f, rows, TT);
        ref_softmax_forward(a2.data(), pre.data(), 0.5f, rows, TT);
        check("ref_softmax_forward", fromact(a2), fromact(a1));
        emu_launch((rows + 7) / 8, 256, softmax_backward, p1.data(), (const act_t*)a1.data(), datt.data(), 0.5f, rows, TT);
        ref_softmax_backward(p2.data(), a1.data(), datt.data(), 0.5f, rows, TT);
        check("ref_softmax_backward", fromact(p2), fromact(p1));
        auto lg = toact(randf(N * ldv, 2.0f));
        std::vector<int> tg(N);
        for (int i = 0; i < N; i++) tg[i] = i % 5 == 0 ? -1 : (int)(rng() % V);
        std::vector<float> l1(N), s1(N), l2(N), s2(N);
        emu_launch(N, 512, crossentropy_forward, l1.data(), s1.data(), (const act_t*)lg.data(), (const int*)tg.data(), N, V, ldv);
        ref_crossentropy_forward(l2.data(), s2.data(), lg.data(), tg.data(), N, V, ldv);
        check("ref_crossentropy_forward", l2, l1, 1e-5);
        auto g = randf(3000);
        std::vector<double> q1(3), q2(3);
        emu_launch(3, 128, sumsq_partials, q1.data(), (const float*)g.data(), 3000);
        ref_sumsq_partials(q2.data(), g.data(), 3000); // gridDim and blockDim still those of the launch
        check("ref_sumsq_partials", {(float)q2[0], (float)q2[1], (float)q2[2]}, {(float)q1[0], (float)q1[1], (float)q1[2]}, 1e-6);
    }
    std::printf("%s: %d kernel check(s) failed\n", BRAID_BF16 ? "bf16" : "fp32", failures);
    return failures ? 1 : 0;
}
