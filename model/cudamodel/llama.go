package cudamodel

import (
	"fmt"
	"math"

	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/model"
)

// The Llama family (Llama, Mistral, Qwen2) on the GPU: package model's
// llama.go, step for step, with the same flat parameter layout. One block
// is
//
//	xn1  = RMSNorm(x)·input_layernorm
//	qkv  = xn1·[Wq; Wk; Wv]ᵀ                 one GEMM over the stacked weights (+ adapters)
//	q, k, v = heads of qkv (+ Qwen2's biases), q and k rotated (RoPE), each
//	          key/value head repeated for the query heads that share it
//	y    = causal attention per query head  the batched GEMMs and softmax GPT-2 uses
//	res2 = x + y·Woᵀ
//	xn2  = RMSNorm(res2)·post_attention_layernorm
//	gu   = xn2·[Wgate; Wup]ᵀ                one GEMM, stacked likewise
//	res3 = res2 + (silu(gate)·up)·Wdownᵀ
//
// then logits = RMSNorm(x)·model.norm · headᵀ (lm_head, or the token
// embedding when tied). Repeating the key/value heads costs memory (the
// expanded k and v are NH heads, not KVH) but lets the attention run as
// one strided batched GEMM; the backward pass sums each repeated head's
// gradient back. Mistral's sliding window is not applied here: a model
// whose window is shorter than the batch's sequence length is refused
// (checkLlama), so every window the GPU computes covers the whole causal
// prefix, as the CPU's does.

// llamaState is what a Model of the Llama family has besides the fields it
// shares with GPT-2: Model.act holds tokens, targets, the embeddings
// (encoded), the final norm (lnf, lnfRstd), logits, losses, lse and the
// attention scores (preatt); Model.bw dres, dresAct, dln, dwx, datt,
// dpreatt, the ones and the token order.
type llamaState struct {
	per      int // tensors per block in the layout
	blocks   []llamaBlockActs
	proj     cuda.Buffer // act (BT, C): o_proj's and down_proj's outputs (scratch)
	y        cuda.Buffer // act (B, NH, T, hd): attention output per head (scratch)
	cos, sin cuda.Buffer // f32 (maxT, hd/2): the rotary tables
	zeroPos  cuda.Buffer // f32 (maxT, C): no position embedding (encoder_forward adds one)
	zeroBias cuda.Buffer // f32 (max(C, W)): no bias (the residual add and Llama's q/k/v take one)

	// backward scratch
	datty, dy, dq, dk, dv cuda.Buffer // act (BT, Q), (B, NH, T, hd) ×4
	dqkv                  cuda.Buffer // act (BT, W)
	dh                    cuda.Buffer // act (BT, H)
	dgu                   cuda.Buffer // act (BT, 2H)
}

type llamaBlockActs struct {
	xn1, rstd1 cuda.Buffer // act (BT, C), f32 (BT)
	qkv        cuda.Buffer // act (BT, W): the projections' outputs, before bias and rotation
	q, k, v    cuda.Buffer // act (B, NH, T, hd): rotated, biased, key/value heads repeated
	att        cuda.Buffer // act (B, NH, T, T)
	atty       cuda.Buffer // act (BT, Q)
	res2       cuda.Buffer // f32 (BT, C)
	xn2, rstd2 cuda.Buffer // act (BT, C), f32 (BT)
	gu         cuda.Buffer // act (BT, 2H) gate | up
	h          cuda.Buffer // act (BT, H) silu(gate)·up
	res3       cuda.Buffer // f32 (BT, C)
}

// Layout indexes of the Llama family's tensors (model.Config.Layout):
// model.embed_tokens first, then per block input_layernorm, q_proj,
// k_proj, v_proj, [their biases], o_proj, post_attention_layernorm,
// gate_proj, up_proj, down_proj; then model.norm and lm_head if untied.
const (
	lAttnNorm = iota
	lQ        // q_proj, k_proj, v_proj follow: one stacked (W, C) matrix
	lK
	lV
	lBiasQ // Qwen2 only: q, k, v biases, one stacked (W) vector
)

// lblk is the layout index of block l's tensor t, where t counts as in a
// Qwen2 block and o_proj and the rest shift down without biases.
func (m *Model) lblk(l, t int) int { return 1 + l*m.llama.per + t }

// lO returns the layout index of block l's o_proj; post_attention_layernorm,
// gate_proj (up_proj stacked after it) and down_proj follow it.
func (m *Model) lO(l int) int {
	if m.Config.QKVBias() {
		return m.lblk(l, lBiasQ+3)
	}
	return m.lblk(l, lBiasQ)
}

// lNorm is the layout index of model.norm; lHead the head's (lm_head, or
// the tied embedding).
func (m *Model) lNorm() int { return 1 + m.Config.Layers*m.llama.per }
func (m *Model) lHead() int {
	if m.Config.Untied {
		return m.lNorm() + 1
	}
	return 0
}

// checkLlama refuses what the GPU's Llama path does not compute.
func checkLlama(c model.Config, maxT int) error {
	if c.SlidingWindow > 0 && c.SlidingWindow < maxT {
		return fmt.Errorf("%w: %s's sliding window (%d tokens) is shorter than the sequence length %d, and the GPU attends over the whole causal prefix: use --seq-len %d or less, or the CPU, which applies the window",
			model.ErrConfig, c.Arch, c.SlidingWindow, maxT, c.SlidingWindow)
	}
	return nil
}

// llamaMemoryBytes is MemoryBytes for the Llama family.
func llamaMemoryBytes(c model.Config, maxB, maxT int, p cuda.Precision, inference bool) int64 {
	a := p.ActBytes()
	BT, C, V, H, L := int64(maxB)*int64(maxT), int64(c.Dim), int64(roundUp(c.Vocab, 64)), int64(c.Hidden), int64(c.Layers)
	NH, hd := int64(c.Heads), int64(c.HeadDim)
	Q, W := NH*hd, (NH+2*int64(c.KVHeads))*hd
	att := int64(maxB) * NH * int64(maxT) * int64(maxT)
	n := int64(c.NumParams())
	perLayer := BT*C*a*2 + BT*4*2 + BT*W*a + BT*Q*a*4 + att*a + BT*C*4*2 + BT*H*a*3
	total := 4*n + L*perLayer + BT*C*4 + BT*C*a*2 + BT*4 + BT*V*a + 8*BT + att*4 + BT*Q*a + int64(maxT)*(hd+C)*4 + 4*max(C, W)
	if p == cuda.BF16 {
		total += 2 * n
	}
	if !inference {
		total += 12*n + BT*C*4*2 + BT*C*a*2 + BT*Q*a*5 + BT*W*a + BT*H*a*3 + att*(4+a) + BT*(4+a) + 12*BT
	}
	return total
}

// allocLlama allocates the family's activations (and, for training, its
// backward scratch) with alloc, newModel's allocator, which records the
// first error.
func (m *Model) allocLlama(alloc func(int64, string) cuda.Buffer, inference bool) {
	c := m.Config
	ab := m.Prec.ActBytes()
	BT, C, V, H := int64(m.maxB*m.maxT), int64(c.Dim), int64(m.vp), int64(c.Hidden)
	NH, hd := int64(c.Heads), int64(c.HeadDim)
	Q, W := NH*hd, (NH+2*int64(c.KVHeads))*hd
	att := int64(m.maxB) * NH * int64(m.maxT) * int64(m.maxT)
	per := (len(m.layout) - 2) / c.Layers
	if c.Untied {
		per = (len(m.layout) - 3) / c.Layers
	}
	s := &llamaState{per: per}
	a := &m.act
	a.tokens, a.targets = alloc(4*BT, "tokens"), alloc(4*BT, "targets")
	a.encoded = alloc(4*BT*C, "embeddings")
	for range c.Layers {
		s.blocks = append(s.blocks, llamaBlockActs{
			xn1: alloc(ab*BT*C, "activations"), rstd1: alloc(4*BT, "activations"), qkv: alloc(ab*BT*W, "activations"),
			q: alloc(ab*BT*Q, "activations"), k: alloc(ab*BT*Q, "activations"), v: alloc(ab*BT*Q, "activations"),
			att: alloc(ab*att, "attention"), atty: alloc(ab*BT*Q, "activations"), res2: alloc(4*BT*C, "activations"),
			xn2: alloc(ab*BT*C, "activations"), rstd2: alloc(4*BT, "activations"),
			gu: alloc(ab*BT*2*H, "activations"), h: alloc(ab*BT*H, "activations"), res3: alloc(4*BT*C, "activations"),
		})
	}
	a.lnf, a.lnfRstd = alloc(ab*BT*C, "activations"), alloc(4*BT, "activations")
	a.logits = alloc(ab*BT*V, "logits")
	a.losses, a.lse = alloc(4*BT, "losses"), alloc(4*BT, "losses")
	a.preatt = alloc(4*att, "attention scores")
	s.proj, s.y = alloc(ab*BT*C, "activations"), alloc(ab*BT*Q, "activations")
	s.cos, s.sin = alloc(4*int64(m.maxT)*hd/2, "rotary tables"), alloc(4*int64(m.maxT)*hd/2, "rotary tables")
	s.zeroPos, s.zeroBias = alloc(4*int64(m.maxT)*C, "zeros"), alloc(4*max(C, W), "zeros")
	m.llama = s
	if inference {
		return
	}
	d := &m.bw
	d.dres = alloc(4*BT*C, "backward scratch")
	d.dresAct = d.dres
	if m.Prec == cuda.BF16 {
		d.dresAct = alloc(ab*BT*C, "backward scratch")
	}
	d.dln = alloc(ab*BT*C, "backward scratch")
	d.datt, d.dpreatt = alloc(4*att, "attention backward"), alloc(ab*att, "attention backward")
	d.dwx = alloc(4*BT*C, "backward scratch")
	s.datty, s.dy = alloc(ab*BT*Q, "backward scratch"), alloc(ab*BT*Q, "backward scratch")
	s.dq, s.dk, s.dv = alloc(ab*BT*Q, "backward scratch"), alloc(ab*BT*Q, "backward scratch"), alloc(ab*BT*Q, "backward scratch")
	s.dqkv, s.dh, s.dgu = alloc(ab*BT*W, "backward scratch"), alloc(ab*BT*H, "backward scratch"), alloc(ab*BT*2*H, "backward scratch")
}

// initLlama fills the tables and zeros once the buffers exist.
func (m *Model) initLlama() error {
	s := m.llama
	cos, sin := model.RopeTables(m.Config, m.maxT)
	if err := m.dev.UploadF32(s.cos, cos); err != nil {
		return err
	}
	if err := m.dev.UploadF32(s.sin, sin); err != nil {
		return err
	}
	return m.zero(s.zeroPos, s.zeroBias)
}

// llamaGradRanges are model.Model.GradRanges for the family: model.norm to
// the end (lm_head when untied), the blocks last first, then
// model.embed_tokens (where a tied head's gradient lands too).
func llamaGradRanges(layout []model.Param, layers, per int) [][2]int {
	norm := layout[1+layers*per].Offset
	end := layout[len(layout)-1].Offset + layout[len(layout)-1].Size
	rs := [][2]int{{norm, end}}
	for l := layers - 1; l >= 0; l-- {
		first, last := layout[1+l*per], layout[l*per+per]
		rs = append(rs, [2]int{first.Offset, last.Offset + last.Size})
	}
	return append(rs, [2]int{0, layout[0].Size})
}

func (m *Model) llamaForward(tokens, targets []int32) error {
	d, p, c, a, s := m.dev, m.Prec, m.Config, &m.act, m.llama
	B, T := m.B, m.T
	BT, C, V, H := B*T, c.Dim, c.Vocab, c.Hidden
	NH, KVH, hd := c.Heads, c.KVHeads, c.HeadDim
	at := p.Act()
	var err error
	do := func(e error) {
		if err == nil {
			err = e
		}
	}
	do(d.UploadI32(a.tokens, tokens))
	if targets != nil {
		do(d.UploadI32(a.targets, targets))
	}
	do(d.EncoderForward(a.encoded, a.tokens, m.p(0), s.zeroPos, BT, T, C))
	// stacked: out (BT, Σo) = inp (BT, in) · [W_first; …; W_last]ᵀ, one GEMM
	// over the stacked weights starting at layout index wi, then each
	// adapted projection's update into its columns.
	stacked := func(l, first, last int, out, inp cuda.Buffer, wi int) {
		in, ld := stackedShape(c, first, last)
		do(d.Gemm(p, BT, ld, in, mat(inp, at, in, false), mat(m.pa(wi), at, in, true), mat(out, at, ld, false), false))
		off := 0
		for pr := first; pr <= last; pr++ {
			if m.adapted(l, pr) {
				do(m.loraForward(l, pr, out.Off(m.Prec.ActBytes()*int64(off)), ld, inp, BT))
			}
			_, o := model.LoRAProjectionShape(c, pr)
			off += o
		}
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	tt, th := int64(T)*int64(T), int64(T)*int64(hd)
	x := a.encoded
	for l := range c.Layers {
		z, o := &s.blocks[l], m.lO(l)
		do(d.RMSNormForward(p, z.xn1, z.rstd1, x, m.p(m.lblk(l, lAttnNorm)), BT, C, float32(c.NormEps)))
		stacked(l, projQ, projV, z.qkv, z.xn1, m.lblk(l, lQ))
		bias := s.zeroBias
		if c.QKVBias() {
			bias = m.p(m.lblk(l, lBiasQ))
		}
		do(d.PermuteQKVGQA(p, z.q, z.k, z.v, z.qkv, bias, s.cos, s.sin, B, T, NH, KVH, hd))
		do(d.GemmBatched(p, T, T, hd, mat(z.q, at, hd, false), th, mat(z.k, at, hd, true), th, mat(a.preatt, cuda.F32, T, false), tt, B*NH, false))
		do(d.SoftmaxForward(p, z.att, a.preatt, scale, B*NH*T, T))
		do(d.GemmBatched(p, T, hd, T, mat(z.att, at, T, false), tt, mat(z.v, at, hd, false), th, mat(s.y, at, hd, false), th, B*NH, false))
		do(d.Unpermute(p, z.atty, s.y, B, T, NH, hd))
		stacked(l, projO, projO, s.proj, z.atty, o)
		do(d.ResidualForward(p, z.res2, x, s.proj, s.zeroBias, BT, C))
		do(d.RMSNormForward(p, z.xn2, z.rstd2, z.res2, m.p(o+1), BT, C, float32(c.NormEps)))
		stacked(l, projGate, projUp, z.gu, z.xn2, o+2)
		do(d.SwiGLUForward(p, z.h, z.gu, BT, H))
		stacked(l, projDown, projDown, s.proj, z.h, o+4)
		do(d.ResidualForward(p, z.res3, z.res2, s.proj, s.zeroBias, BT, C))
		x = z.res3
	}
	do(d.RMSNormForward(p, a.lnf, a.lnfRstd, x, m.p(m.lNorm()), BT, C, float32(c.NormEps)))
	do(d.Gemm(p, BT, m.vg, C, mat(a.lnf, at, C, false), mat(m.pa(m.lHead()), at, C, true), mat(a.logits, at, m.vp, false), false))
	if targets != nil {
		do(d.CrossEntropyForward(p, a.losses, a.lse, a.logits, a.targets, BT, V, m.vp))
	}
	return err
}

// stackedShape returns the input features of projections first..last
// (they share their input) and the sum of their output features.
func stackedShape(c model.Config, first, last int) (in, out int) {
	in, _ = model.LoRAProjectionShape(c, first)
	for p := first; p <= last; p++ {
		_, o := model.LoRAProjectionShape(c, p)
		out += o
	}
	return in, out
}

func (m *Model) llamaBackward(dloss float32) error {
	d, p, c, a, w, s := m.dev, m.Prec, m.Config, &m.act, &m.bw, m.llama
	B, T := m.B, m.T
	BT, C, V, H := B*T, c.Dim, c.Vocab, c.Hidden
	NH, KVH, hd := c.Heads, c.KVHeads, c.HeadDim
	W := (NH + 2*KVH) * hd
	at := p.Act()
	bp := &backwardPass{m: m, BT: BT}
	do, colsum := bp.do, bp.colsum
	frozen := m.ad != nil
	// stackedBack is stacked's backward pass: dinp (BT, in) = dout · W
	// (skipped when dinp is the zero Buffer); dW += doutᵀ · inp, or with an
	// adapter the adapter's gradients.
	stackedBack := func(l, first, last int, dinp, dout, inp cuda.Buffer, wi int) {
		in, ld := stackedShape(c, first, last)
		if dinp.Ptr != 0 {
			do(d.Gemm(p, BT, in, ld, mat(dout, at, ld, false), mat(m.pa(wi), at, in, false), mat(dinp, at, in, false), false))
		}
		if !frozen {
			do(d.Gemm(p, ld, in, BT, mat(dout, at, ld, true), mat(inp, at, in, false), mat(m.g(wi), cuda.F32, in, false), true))
			return
		}
		off := 0
		for pr := first; pr <= last; pr++ {
			if m.adapted(l, pr) {
				do(m.loraBackward(l, pr, dinp, dout.Off(m.Prec.ActBytes()*int64(off)), ld, inp, BT))
			}
			_, o := model.LoRAProjectionShape(c, pr)
			off += o
		}
	}
	normBack := func(dinp, dout, inp cuda.Buffer, wi int, rstd cuda.Buffer) {
		do(d.RMSNormBackward(p, dinp, w.dwx, dout, inp, m.p(wi), rstd, BT, C))
		if !frozen {
			colsum(m.g(wi), w.dwx, cuda.F32, C)
		}
	}
	toAct, ready := bp.toAct, bp.ready

	dlogits := a.logits // in place
	do(d.CrossEntropyBackward(p, dlogits, a.logits, a.lse, a.targets, dloss, BT, V, m.vp))
	head := m.lHead()
	do(d.Gemm(p, BT, C, m.vg, mat(dlogits, at, m.vp, false), mat(m.pa(head), at, C, false), mat(w.dln, at, C, false), false))
	if !frozen {
		do(d.Gemm(p, V, C, BT, mat(dlogits, at, m.vp, true), mat(a.lnf, at, C, false), mat(m.g(head), cuda.F32, C, false), true))
	}
	do(d.Zero(w.dres, 4*int64(BT*C)))
	last := a.encoded
	if c.Layers > 0 {
		last = s.blocks[c.Layers-1].res3
	}
	normBack(w.dres, w.dln, last, m.lNorm(), a.lnfRstd)
	if !frozen {
		ready(0) // model.norm (and lm_head)
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	tt, th := int64(T)*int64(T), int64(T)*int64(hd)
	for l := c.Layers - 1; l >= 0; l-- {
		z, o := &s.blocks[l], m.lO(l)
		x := a.encoded
		if l > 0 {
			x = s.blocks[l-1].res3
		}
		// MLP branch: dres is ∂L/∂res3 = ∂L/∂(down_proj's output).
		toAct()
		stackedBack(l, projDown, projDown, s.dh, w.dresAct, z.h, o+4)
		do(d.SwiGLUBackward(p, s.dgu, s.dh, z.gu, BT, H))
		stackedBack(l, projGate, projUp, w.dln, s.dgu, z.xn2, o+2)
		normBack(w.dres, w.dln, z.res2, o+1, z.rstd2) // dres becomes ∂L/∂res2
		// Attention branch.
		toAct()
		stackedBack(l, projO, projO, s.datty, w.dresAct, z.atty, o)
		do(d.UnpermuteBackward(p, s.dy, s.datty, B, T, NH, hd))
		do(d.GemmBatched(p, T, T, hd, mat(s.dy, at, hd, false), th, mat(z.v, at, hd, true), th, mat(w.datt, cuda.F32, T, false), tt, B*NH, false))
		do(d.GemmBatched(p, T, hd, T, mat(z.att, at, T, true), tt, mat(s.dy, at, hd, false), th, mat(s.dv, at, hd, false), th, B*NH, false))
		do(d.SoftmaxBackward(p, w.dpreatt, z.att, w.datt, scale, B*NH*T, T))
		do(d.GemmBatched(p, T, hd, T, mat(w.dpreatt, at, T, false), tt, mat(z.k, at, hd, false), th, mat(s.dq, at, hd, false), th, B*NH, false))
		do(d.GemmBatched(p, T, hd, T, mat(w.dpreatt, at, T, true), tt, mat(z.q, at, hd, false), th, mat(s.dk, at, hd, false), th, B*NH, false))
		do(d.PermuteQKVGQABackward(p, s.dqkv, s.dq, s.dk, s.dv, s.cos, s.sin, B, T, NH, KVH, hd))
		if c.QKVBias() && !frozen {
			colsum(m.g(m.lblk(l, lBiasQ)), s.dqkv, at, W)
		}
		needInput := !frozen || l > 0
		dxn1 := w.dln
		if !needInput {
			dxn1 = cuda.Buffer{}
		}
		stackedBack(l, projQ, projV, dxn1, s.dqkv, z.xn1, m.lblk(l, lQ))
		if needInput {
			normBack(w.dres, w.dln, x, m.lblk(l, lAttnNorm), z.rstd1) // dres becomes ∂L/∂x
		}
		if frozen {
			ready(c.Layers - 1 - l) // the adapter's block l
		} else {
			ready(c.Layers - l) // block l
		}
	}
	if frozen {
		return bp.err
	}
	distinct, uerr := m.uploadTokenOrder()
	do(uerr)
	do(d.EncoderBackwardWTE(m.g(0), w.dres, w.order, w.starts, w.utok, distinct, C))
	ready(c.Layers + 1) // model.embed_tokens
	return bp.err
}
