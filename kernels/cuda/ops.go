package cuda

import (
	"fmt"
	"unsafe"
)

// The element types of GEMM operands (cudaDataType).
type DType int

func (t DType) String() string {
	if t == B16 {
		return "bf16"
	}
	return "f32"
}

const (
	F32 DType = 0  // CUDA_R_32F
	B16 DType = 14 // CUDA_R_16BF
)

// Act is the activation type of precision p.
func (p Precision) Act() DType {
	if p == BF16 {
		return B16
	}
	return F32
}

// cuBLAS constants.
const (
	blasOpN            = 0
	blasOpT            = 1
	blasCompute32F     = 68 // CUBLAS_COMPUTE_32F
	blasCompute32FTF32 = 77 // CUBLAS_COMPUTE_32F_FAST_TF32
	blasGemmDefault    = ^uintptr(0)
)

func (p Precision) compute() uintptr {
	if p == TF32 {
		return blasCompute32FTF32
	}
	return blasCompute32F
}

// Mat is one GEMM operand: a device buffer, its element type and leading
// dimension (row stride, row-major), and whether it is used transposed.
type Mat struct {
	Buf   Buffer
	Type  DType
	LD    int
	Trans bool
}

// Gemm computes, row-major like kernels.Gemm, C (m×n) = op(A) (m×k) ·
// op(B) (k×n), or adds it to C when accumulate, with float32 accumulation
// (TF32 tensor cores when p is TF32). It queues the work and returns.
func (d *Device) Gemm(p Precision, m, n, k int, a, b, c Mat, accumulate bool) error {
	return d.GemmBatched(p, m, n, k, a, 0, b, 0, c, 0, 1, accumulate)
}

// GemmBatched is batch GEMMs whose operands lie strideA, strideB, strideC
// elements apart.
func (d *Device) GemmBatched(p Precision, m, n, k int, a Mat, strideA int64, b Mat, strideB int64, c Mat, strideC int64, batch int, accumulate bool) error {
	return d.gemm(p, m, n, k, a, strideA, b, strideB, c, strideC, batch, 1, accumulate)
}

// GemmScaled is Gemm with the product scaled by alpha: C = alpha·op(A)·op(B)
// (+ C if accumulate).
func (d *Device) GemmScaled(p Precision, m, n, k int, a, b, c Mat, alpha float32, accumulate bool) error {
	return d.gemm(p, m, n, k, a, 0, b, 0, c, 0, 1, alpha, accumulate)
}

func (d *Device) gemm(p Precision, m, n, k int, a Mat, strideA int64, b Mat, strideB int64, c Mat, strideC int64, batch int, alpha float32, accumulate bool) error {
	if m <= 0 || n <= 0 || k <= 0 || batch <= 0 {
		return nil
	}
	// cuBLAS reads alpha and beta from host memory before the call returns.
	d.consts[2] = alpha
	beta := uintptr(unsafe.Pointer(&d.consts[1]))
	if accumulate {
		beta = uintptr(unsafe.Pointer(&d.consts[0]))
	}
	op := func(t bool) uintptr {
		if t {
			return blasOpT
		}
		return blasOpN
	}
	if d.prof != nil {
		tn := func(t bool) string {
			if t {
				return "T"
			}
			return "N"
		}
		d.profBegin(fmt.Sprintf("gemm %s%s %dx%dx%d batch %d %v->%v", tn(a.Trans), tn(b.Trans), m, n, k, batch, a.Type, c.Type))
		defer d.profEnd()
	}
	// Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, and a
	// row-major matrix read column-major is its transpose: swap the
	// operands, keep their flags.
	var r uintptr
	if batch == 1 {
		r = ccall(sym.cublasGemmEx, d.blas, op(b.Trans), op(a.Trans), uintptr(n), uintptr(m), uintptr(k),
			uintptr(unsafe.Pointer(&d.consts[2])), b.Buf.Ptr, uintptr(b.Type), uintptr(b.LD), a.Buf.Ptr, uintptr(a.Type), uintptr(a.LD),
			beta, c.Buf.Ptr, uintptr(c.Type), uintptr(c.LD), p.compute(), blasGemmDefault)
	} else {
		r = ccall(sym.cublasGemmStridedBatchedEx, d.blas, op(b.Trans), op(a.Trans), uintptr(n), uintptr(m), uintptr(k),
			uintptr(unsafe.Pointer(&d.consts[2])), b.Buf.Ptr, uintptr(b.Type), uintptr(b.LD), uintptr(strideB),
			a.Buf.Ptr, uintptr(a.Type), uintptr(a.LD), uintptr(strideA),
			beta, c.Buf.Ptr, uintptr(c.Type), uintptr(c.LD), uintptr(strideC), uintptr(batch), p.compute(), blasGemmDefault)
	}
	if uint32(r) != 0 {
		return d.named(fmt.Errorf("cuda: cuBLAS GEMM %d×%d×%d (batch %d, %v): status %d", m, n, k, batch, p, uint32(r)))
	}
	return nil
}

// maxGrid caps the blocks of a grid-stride launch.
const maxGrid = 65536

// MaxGridStride is the largest step of a grid-stride loop (blocks × threads
// of any launch): the kernels' 32-bit indices need buffers at least this
// far below 2³¹.
const MaxGridStride = maxGrid * 1024

// grid returns the blocks of threads for n elements of grid-stride work,
// capped so that each thread does a few.
func grid(n int64, threads int) int {
	g := (n + int64(threads) - 1) / int64(threads)
	if g > maxGrid {
		g = maxGrid
	}
	return int(g)
}

// Elementwise kernels: 256 threads a block; the row kernels take one warp
// a row, 8 rows a block.
const (
	ewThreads  = 256
	rowsPerBlk = 8
)

func rowBlocks(rows int) int { return (rows + rowsPerBlk - 1) / rowsPerBlk }

// Axpy: out = a·x + y (n floats).
func (d *Device) Axpy(out, x, y Buffer, a float32, n int) error {
	return d.Launch(FP32, "axpy", grid(int64(n), ewThreads), ewThreads, P(out), P(x), P(y), F(a), I(n))
}

// Fill sets n activations of out to v.
func (d *Device) Fill(p Precision, out Buffer, v float32, n int) error {
	return d.Launch(p, "fill_act", grid(int64(n), ewThreads), ewThreads, P(out), F(v), I(n))
}

// CastToAct writes n floats of in to out as activations.
func (d *Device) CastToAct(p Precision, out, in Buffer, n int) error {
	return d.Launch(p, "cast_to_act", grid(int64(n), ewThreads), ewThreads, P(out), P(in), I(n))
}

// ResidualForward: out (N, OC) = a + b + bias (a, out float, b activations).
func (d *Device) ResidualForward(p Precision, out, a, b, bias Buffer, N, OC int) error {
	n := N * OC
	return d.Launch(p, "residual_forward", grid(int64(n), ewThreads), ewThreads, P(out), P(a), P(b), P(bias), I(n), I(OC))
}

// GeluForward: inp (N, OC) += bias, then out = GELU(inp).
func (d *Device) GeluForward(p Precision, out, inp, bias Buffer, N, OC int) error {
	n := N * OC
	return d.Launch(p, "gelu_forward", grid(int64(n), ewThreads), ewThreads, P(out), P(inp), P(bias), I(n), I(OC))
}

// GeluBackward: dinp = GELU'(inp)·dout (overwrites dinp).
func (d *Device) GeluBackward(p Precision, dinp, inp, dout Buffer, n int) error {
	return d.Launch(p, "gelu_backward", grid(int64(n), ewThreads), ewThreads, P(dinp), P(inp), P(dout), I(n))
}

// EncoderForward: out (BT, C) = wte[tokens] + wpe[t].
func (d *Device) EncoderForward(out, tokens, wte, wpe Buffer, BT, T, C int) error {
	return d.Launch(FP32, "encoder_forward", grid(int64(BT*C), ewThreads), ewThreads, P(out), P(tokens), P(wte), P(wpe), I(BT), I(T), I(C))
}

// EncoderBackwardWPE: dwpe (T, C) += Σ_b dout.
func (d *Device) EncoderBackwardWPE(dwpe, dout Buffer, B, T, C int) error {
	return d.Launch(FP32, "encoder_backward_wpe", grid(int64(T*C), ewThreads), ewThreads, P(dwpe), P(dout), I(B), I(T), I(C))
}

// EncoderBackwardWTE: dwte[utok[u]] += Σ dout[order[starts[u]..starts[u+1])]
// for each of the u distinct tokens.
func (d *Device) EncoderBackwardWTE(dwte, dout, order, starts, utok Buffer, distinct, C int) error {
	return d.Launch(FP32, "encoder_backward_wte", distinct, 256, P(dwte), P(dout), P(order), P(starts), P(utok), I(C))
}

// LayerNormForward: out (N, C) activations, mean, rstd (N).
func (d *Device) LayerNormForward(p Precision, out, mean, rstd, inp, w, b Buffer, N, C int) error {
	return d.Launch(p, "layernorm_forward", rowBlocks(N), 32*rowsPerBlk, P(out), P(mean), P(rstd), P(inp), P(w), P(b), I(N), I(C))
}

// LayerNormBackward: dinp += ∂L/∂inp; dwx = dout·x̂ (scratch, N×C float).
func (d *Device) LayerNormBackward(p Precision, dinp, dwx, dout, inp, w, mean, rstd Buffer, N, C int) error {
	return d.Launch(p, "layernorm_backward", rowBlocks(N), 32*rowsPerBlk, P(dinp), P(dwx), P(dout), P(inp), P(w), P(mean), P(rstd), I(N), I(C))
}

// PermuteQKV: qkv (B, T, 3C) + bias (3C) → q, k, v (B, NH, T, hs).
func (d *Device) PermuteQKV(p Precision, q, k, v, qkv, bias Buffer, B, T, NH, hs int) error {
	return d.Launch(p, "permute_qkv", grid(int64(B*T*NH*hs), ewThreads), ewThreads, P(q), P(k), P(v), P(qkv), P(bias), I(B), I(T), I(NH), I(hs))
}

// PermuteQKVBackward: dq, dk, dv → dqkv (overwritten).
func (d *Device) PermuteQKVBackward(p Precision, dqkv, dq, dk, dv Buffer, B, T, NH, hs int) error {
	return d.Launch(p, "permute_qkv_backward", grid(int64(B*T*NH*hs), ewThreads), ewThreads, P(dqkv), P(dq), P(dk), P(dv), I(B), I(T), I(NH), I(hs))
}

// Unpermute: y (B, NH, T, hs) → out (B, T, C).
func (d *Device) Unpermute(p Precision, out, y Buffer, B, T, NH, hs int) error {
	return d.Launch(p, "unpermute", grid(int64(B*T*NH*hs), ewThreads), ewThreads, P(out), P(y), I(B), I(T), I(NH), I(hs))
}

// UnpermuteBackward: dout (B, T, C) → dy (B, NH, T, hs).
func (d *Device) UnpermuteBackward(p Precision, dy, dout Buffer, B, T, NH, hs int) error {
	return d.Launch(p, "unpermute_backward", grid(int64(B*T*NH*hs), ewThreads), ewThreads, P(dy), P(dout), I(B), I(T), I(NH), I(hs))
}

// RMSNormForward: out (N, C) activations = inp·rstd·w, rstd (N) saved.
func (d *Device) RMSNormForward(p Precision, out, rstd, inp, w Buffer, N, C int, eps float32) error {
	return d.Launch(p, "rmsnorm_forward", rowBlocks(N), 32*rowsPerBlk, P(out), P(rstd), P(inp), P(w), I(N), I(C), F(eps))
}

// RMSNormBackward: dinp += ∂L/∂inp; dwx = dout·x·rstd (scratch, N×C float).
func (d *Device) RMSNormBackward(p Precision, dinp, dwx, dout, inp, w, rstd Buffer, N, C int) error {
	return d.Launch(p, "rmsnorm_backward", rowBlocks(N), 32*rowsPerBlk, P(dinp), P(dwx), P(dout), P(inp), P(w), P(rstd), I(N), I(C))
}

// PermuteQKVGQA: qkv (B, T, (NH+2·KVH)·hd) + bias → q, k, v (B, NH, T, hd),
// q and k rotated by the rotary tables cos, sin (≥ T, hd/2), key and value
// heads repeated for the query heads that share them.
func (d *Device) PermuteQKVGQA(p Precision, q, k, v, qkv, bias, cos, sin Buffer, B, T, NH, KVH, hd int) error {
	return d.Launch(p, "permute_qkv_gqa", grid(int64(B*T*NH*hd), ewThreads), ewThreads,
		P(q), P(k), P(v), P(qkv), P(bias), P(cos), P(sin), I(B), I(T), I(NH), I(KVH), I(hd))
}

// PermuteQKVGQABackward: dq, dk, dv (B, NH, T, hd) → dqkv (overwritten),
// rotated back and summed over the heads that share a key/value head.
func (d *Device) PermuteQKVGQABackward(p Precision, dqkv, dq, dk, dv, cos, sin Buffer, B, T, NH, KVH, hd int) error {
	return d.Launch(p, "permute_qkv_gqa_backward", grid(int64(B*T*(NH+2*KVH)*hd), ewThreads), ewThreads,
		P(dqkv), P(dq), P(dk), P(dv), P(cos), P(sin), I(B), I(T), I(NH), I(KVH), I(hd))
}

// SwiGLUForward: out (N, H) = silu(gate)·up of gu (N, 2H) [gate | up].
func (d *Device) SwiGLUForward(p Precision, out, gu Buffer, N, H int) error {
	return d.Launch(p, "swiglu_forward", grid(int64(N*H), ewThreads), ewThreads, P(out), P(gu), I(N), I(H))
}

// SwiGLUBackward: dgu (N, 2H) = ∂L/∂gu given dout (N, H) (overwritten).
func (d *Device) SwiGLUBackward(p Precision, dgu, dout, gu Buffer, N, H int) error {
	return d.Launch(p, "swiglu_backward", grid(int64(N*H), ewThreads), ewThreads, P(dgu), P(dout), P(gu), I(N), I(H))
}

// SoftmaxForward: att (rows, T) = causal softmax(scale·preatt).
func (d *Device) SoftmaxForward(p Precision, att, preatt Buffer, scale float32, rows, T int) error {
	return d.Launch(p, "softmax_forward", rowBlocks(rows), 32*rowsPerBlk, P(att), P(preatt), F(scale), I(rows), I(T))
}

// SoftmaxBackward: dpreatt = scale·att·(datt − Σ att·datt), causal.
func (d *Device) SoftmaxBackward(p Precision, dpreatt, att, datt Buffer, scale float32, rows, T int) error {
	return d.Launch(p, "softmax_backward", rowBlocks(rows), 32*rowsPerBlk, P(dpreatt), P(att), P(datt), F(scale), I(rows), I(T))
}

// CrossEntropyForward: losses, lse (N) from logits (N, V; row stride ldv).
func (d *Device) CrossEntropyForward(p Precision, losses, lse, logits, targets Buffer, N, V, ldv int) error {
	return d.Launch(p, "crossentropy_forward", N, 512, P(losses), P(lse), P(logits), P(targets), I(N), I(V), I(ldv))
}

// CrossEntropyBackward: dlogits = (softmax − onehot)·dloss (may be logits),
// 0 in each row's padding (columns V..ldv).
func (d *Device) CrossEntropyBackward(p Precision, dlogits, logits, lse, targets Buffer, dloss float32, N, V, ldv int) error {
	return d.Launch(p, "crossentropy_backward", N, 512, P(dlogits), P(logits), P(lse), P(targets), F(dloss), I(N), I(V), I(ldv))
}

// SumSqBlocks is the number of partial sums SumSqPartials writes.
const SumSqBlocks = 512

// SumSqPartials writes SumSqBlocks partial sums of g² (n floats) in double.
func (d *Device) SumSqPartials(partials, g Buffer, n int) error {
	return d.Launch(FP32, "sumsq_partials", SumSqBlocks, 1024, P(partials), P(g), I(n))
}

// AdamWArgs are one AdamW update's settings, as kernels.AdamW derives them.
type AdamWArgs struct {
	Beta1, Beta2, Eps float32
	Decay             float32 // 1 − lr·weight decay
	StepSize          float32 // lr / (1 − β1^t)
	BC2Sqrt           float32 // sqrt(1 − β2^t)
	GradScale         float32 // clipping's factor on the gradient (1: none)
}

// AdamW updates n parameters; pact (zero Buffer for none) receives them as
// activations.
func (d *Device) AdamW(p Precision, params, pact, grads, m, v Buffer, n int, a AdamWArgs) error {
	return d.Launch(p, "adamw", grid(int64(n), ewThreads), ewThreads, P(params), P(pact), P(grads), P(m), P(v), I(n),
		F(a.Beta1), F(a.Beta2), F(a.Eps), F(a.Decay), F(a.StepSize), F(a.BC2Sqrt), F(a.GradScale))
}
