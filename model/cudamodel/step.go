package cudamodel

import (
	"fmt"
	"math"

	"github.com/braidml/braid/kernels/cuda"
)

// tensor indexes in a block's slice of the layout (model.Config.Layout).
const (
	tLn1w = iota
	tLn1b
	tQKVw
	tQKVb
	tAttProjw
	tAttProjb
	tLn2w
	tLn2b
	tFCw
	tFCb
	tFCProjw
	tFCProjb
	perBlock
)

// p, pa and g return parameter i of the layout as float32 master weights,
// as activation-typed weights, and as its gradient.
func (m *Model) p(i int) cuda.Buffer { return m.params.Off(4 * int64(m.layout[i].Offset)) }
func (m *Model) pa(i int) cuda.Buffer {
	return m.pact.Off(m.Prec.ActBytes() * int64(m.layout[i].Offset))
}
func (m *Model) g(i int) cuda.Buffer { return m.base.grads.Off(4 * int64(m.layout[i].Offset)) }

// blk is the layout index of tensor t of block l.
func blk(l, t int) int { return 2 + l*perBlock + t }

// lnf is the layout index of ln_f.weight (ln_f.bias follows).
func (m *Model) lnf() int { return 2 + m.Config.Layers*perBlock }

// mat builds a GEMM operand.
func mat(b cuda.Buffer, t cuda.DType, ld int, trans bool) cuda.Mat {
	return cuda.Mat{Buf: b, Type: t, LD: ld, Trans: trans}
}

// Forward runs the model on tokens (B, T) and, when targets is not nil,
// returns the mean cross-entropy over the positions whose target is not
// −1, like model.Model.Forward (same checks, same errors). It waits for the
// device only to bring the loss back.
func (m *Model) Forward(tokens, targets []int32, B, T int) (float32, error) {
	c := m.Config
	if B < 1 || T < 1 || T > m.maxT || B*T > m.maxB*m.maxT {
		return 0, fmt.Errorf("cudamodel: batch %d×%d does not fit the %d×%d this model was allocated for", B, T, m.maxB, m.maxT)
	}
	if len(tokens) != B*T || (targets != nil && len(targets) != B*T) {
		return 0, fmt.Errorf("cudamodel: got %d tokens and %d targets for a %d×%d batch", len(tokens), len(targets), B, T)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= c.Vocab {
			return 0, fmt.Errorf("cudamodel: token %d at position %d is outside the vocabulary [0, %d)", t, i, c.Vocab)
		}
	}
	counted := 0
	for i, t := range targets {
		if t < -1 || int(t) >= c.Vocab {
			return 0, fmt.Errorf("cudamodel: target %d at position %d is outside the vocabulary [0, %d)", t, i, c.Vocab)
		}
		if t >= 0 {
			counted++
		}
	}
	m.B, m.T, m.counted, m.targets = B, T, counted, targets != nil
	m.tokens = append(m.tokens[:0], tokens...)
	unlock := m.dev.Lock()
	defer unlock()
	if err := m.forward(tokens, targets); err != nil {
		return 0, err
	}
	if targets == nil {
		return 0, m.dev.Sync()
	}
	BT := B * T
	if err := m.dev.DownloadF32(m.hostLoss[:BT], m.act.losses); err != nil {
		return 0, err
	}
	if counted == 0 {
		return 0, nil
	}
	var sum float64
	for i, l := range m.hostLoss[:BT] {
		if targets[i] >= 0 {
			sum += float64(l)
		}
	}
	return float32(sum / float64(counted)), nil
}

func (m *Model) forward(tokens, targets []int32) error {
	if m.llama != nil {
		return m.llamaForward(tokens, targets)
	}
	d, p, c, a := m.dev, m.Prec, m.Config, &m.act
	B, T := m.B, m.T
	BT, C, V, NH, hs := B*T, c.Dim, c.Vocab, c.Heads, c.HeadSize()
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
	do(d.EncoderForward(a.encoded, a.tokens, m.p(0), m.p(1), BT, T, C))
	// linear: out (BT, o) = inp (BT, in) · Wᵀ
	// plus the attached adapter's update to projection proj of block l;
	// the bias is left to the kernel that reads out next (permute, GELU,
	// residual), which adds it on the way.
	linear := func(l, proj int, out, inp cuda.Buffer, w, in, o int) {
		do(d.Gemm(p, BT, o, in, mat(inp, at, in, false), mat(m.pa(w), at, in, true), mat(out, at, o, false), false))
		if m.adapted(l, proj) {
			do(m.loraForward(l, proj, out, o, inp, BT))
		}
	}
	scale := float32(1 / math.Sqrt(float64(hs)))
	x := a.encoded
	for l := 0; l < c.Layers; l++ {
		s := &a.blocks[l]
		do(d.LayerNormForward(p, s.ln1, s.ln1Mean, s.ln1Rstd, x, m.p(blk(l, tLn1w)), m.p(blk(l, tLn1b)), BT, C))
		linear(l, projQKV, s.qkv, s.ln1, blk(l, tQKVw), C, 3*C)
		do(d.PermuteQKV(p, s.q, s.k, s.v, s.qkv, m.p(blk(l, tQKVb)), B, T, NH, hs))
		tt, th := int64(T)*int64(T), int64(T)*int64(hs)
		// preatt (T, T) = q · kᵀ per (b, h)
		do(d.GemmBatched(p, T, T, hs, mat(s.q, at, hs, false), th, mat(s.k, at, hs, true), th, mat(a.preatt, cuda.F32, T, false), tt, B*NH, false))
		do(d.SoftmaxForward(p, s.att, a.preatt, scale, B*NH*T, T))
		// y (T, hs) = att · v
		do(d.GemmBatched(p, T, hs, T, mat(s.att, at, T, false), tt, mat(s.v, at, hs, false), th, mat(a.y, at, hs, false), th, B*NH, false))
		do(d.Unpermute(p, s.atty, a.y, B, T, NH, hs))
		linear(l, projAttnOut, s.attproj, s.atty, blk(l, tAttProjw), C, C)
		do(d.ResidualForward(p, s.res2, x, s.attproj, m.p(blk(l, tAttProjb)), BT, C))
		do(d.LayerNormForward(p, s.ln2, s.ln2Mean, s.ln2Rstd, s.res2, m.p(blk(l, tLn2w)), m.p(blk(l, tLn2b)), BT, C))
		linear(l, projFC, s.fch, s.ln2, blk(l, tFCw), C, 4*C)
		do(d.GeluForward(p, s.fchGelu, s.fch, m.p(blk(l, tFCb)), BT, 4*C))
		linear(l, projMLPOut, s.fcproj, s.fchGelu, blk(l, tFCProjw), 4*C, C)
		do(d.ResidualForward(p, s.res3, s.res2, s.fcproj, m.p(blk(l, tFCProjb)), BT, C))
		x = s.res3
	}
	lnf := m.lnf()
	do(d.LayerNormForward(p, a.lnf, a.lnfMean, a.lnfRstd, x, m.p(lnf), m.p(lnf+1), BT, C))
	// logits (BT, V) = lnf · wteᵀ, rows Vp apart; computed over vg ≥ V
	// columns (see vocabGEMM), the extra ones never read
	do(d.Gemm(p, BT, m.vg, C, mat(a.lnf, at, C, false), mat(m.pa(0), at, C, true), mat(a.logits, at, m.vp, false), false))
	if targets != nil {
		do(d.CrossEntropyForward(p, a.losses, a.lse, a.logits, a.targets, BT, V, m.vp))
	}
	return err
}

// LogitsAt copies the first len(dst) logits of sequence b, position t of
// the last Forward into dst. Backward overwrites the logits.
func (m *Model) LogitsAt(dst []float32, b, t int) error {
	V := m.Config.Vocab
	if len(dst) > V || b < 0 || b >= m.B || t < 0 || t >= m.T {
		return fmt.Errorf("cudamodel: Logits(%d floats, %d, %d) of a %d×%d batch with vocabulary %d", len(dst), b, t, m.B, m.T, V)
	}
	unlock := m.dev.Lock()
	defer unlock()
	row := int64(b*m.T+t) * int64(m.vp)
	if m.Prec != cuda.BF16 {
		return m.dev.DownloadF32(dst, m.act.logits.Off(4*row))
	}
	raw := make([]uint16, len(dst))
	if err := m.dev.DownloadU16(raw, m.act.logits.Off(2*row)); err != nil {
		return err
	}
	for i, u := range raw {
		dst[i] = math.Float32frombits(uint32(u) << 16)
	}
	return nil
}

// ZeroGrad clears the gradient buffer.
func (m *Model) ZeroGrad() error {
	if m.inference {
		return fmt.Errorf("cudamodel: ZeroGrad on a model made by NewInference")
	}
	unlock := m.dev.Lock()
	defer unlock()
	return m.dev.Zero(m.tr.grads, 4*int64(m.tr.n))
}

// Backward adds the gradient of the last Forward's mean loss, times scale,
// into the gradient buffer, like model.Model.Backward. It overwrites the
// logits. It queues the work; errors of the work itself come back from the
// next call that waits (ClipGradNorm, a download, Sync).
func (m *Model) Backward(scale float32) error {
	if m.inference {
		return fmt.Errorf("cudamodel: Backward on a model made by NewInference")
	}
	if !m.targets {
		return fmt.Errorf("cudamodel: Backward needs a Forward call with targets")
	}
	unlock := m.dev.Lock()
	defer unlock()
	if m.counted == 0 { // nothing to add: every range is final as it is
		if m.GradReady != nil {
			for _, r := range m.tr.gradRanges {
				m.GradReady(r[0], r[1])
			}
		}
		return nil
	}
	return m.backward(scale / float32(m.counted))
}

func (m *Model) backward(dloss float32) error {
	if m.llama != nil {
		return m.llamaBackward(dloss)
	}
	d, p, c, a, w := m.dev, m.Prec, m.Config, &m.act, &m.bw
	B, T := m.B, m.T
	BT, C, V, NH, hs := B*T, c.Dim, c.Vocab, c.Heads, c.HeadSize()
	at := p.Act()
	bp := &backwardPass{m: m, BT: BT}
	do, colsum := bp.do, bp.colsum
	// With an adapter attached the base is frozen: no base gradients, and
	// nothing below block 0's c_attn (the embeddings are frozen too).
	frozen := m.ad != nil
	// linearBack, projection proj of block l: dinp (BT, in) = dout · W
	// (skipped when dinp is the zero Buffer); dW += doutᵀ · inp and db +=
	// Σ dout, or with an adapter the adapter's gradients.
	linearBack := func(l, proj int, dinp, dout, inp cuda.Buffer, wi, bi, in, o int) {
		if dinp.Ptr != 0 {
			do(d.Gemm(p, BT, in, o, mat(dout, at, o, false), mat(m.pa(wi), at, in, false), mat(dinp, at, in, false), false))
		}
		if !frozen {
			do(d.Gemm(p, o, in, BT, mat(dout, at, o, true), mat(inp, at, in, false), mat(m.g(wi), cuda.F32, in, false), true))
			colsum(m.g(bi), dout, at, o)
		} else if m.adapted(l, proj) {
			do(m.loraBackward(l, proj, dinp, dout, o, inp, BT))
		}
	}
	lnBack := func(dinp, dout, inp, wi, mean, rstd cuda.Buffer, gw, gb cuda.Buffer) {
		do(d.LayerNormBackward(p, dinp, w.dwx, dout, inp, wi, mean, rstd, BT, C))
		if !frozen {
			colsum(gw, w.dwx, cuda.F32, C)
			colsum(gb, dout, at, C)
		}
	}
	toAct := bp.toAct

	dlogits := a.logits // in place
	do(d.CrossEntropyBackward(p, dlogits, a.logits, a.lse, a.targets, dloss, BT, V, m.vp))
	// dln (BT, C) = dlogits · wte; dwte += dlogitsᵀ · lnf
	// (over vg rows of wte: dlogits is 0 in the padding columns)
	do(d.Gemm(p, BT, C, m.vg, mat(dlogits, at, m.vp, false), mat(m.pa(0), at, C, false), mat(w.dln, at, C, false), false))
	if !frozen {
		do(d.Gemm(p, V, C, BT, mat(dlogits, at, m.vp, true), mat(a.lnf, at, C, false), mat(m.g(0), cuda.F32, C, false), true))
	}
	do(d.Zero(w.dres, 4*int64(BT*C)))
	last := a.encoded
	if c.Layers > 0 {
		last = a.blocks[c.Layers-1].res3
	}
	lnf := m.lnf()
	lnBack(w.dres, w.dln, last, m.p(lnf), a.lnfMean, a.lnfRstd, m.g(lnf), m.g(lnf+1))
	ready := bp.ready
	if !frozen {
		ready(0) // ln_f
	}
	scale := float32(1 / math.Sqrt(float64(hs)))
	tt, th := int64(T)*int64(T), int64(T)*int64(hs)
	for l := c.Layers - 1; l >= 0; l-- {
		s := &a.blocks[l]
		x := a.encoded
		if l > 0 {
			x = a.blocks[l-1].res3
		}
		// MLP branch: dres is ∂L/∂res3 = ∂L/∂fcproj.
		toAct()
		linearBack(l, projMLPOut, w.dfchG, w.dresAct, s.fchGelu, blk(l, tFCProjw), blk(l, tFCProjb), 4*C, C)
		do(d.GeluBackward(p, w.dfch, s.fch, w.dfchG, BT*4*C))
		linearBack(l, projFC, w.dln, w.dfch, s.ln2, blk(l, tFCw), blk(l, tFCb), C, 4*C)
		lnBack(w.dres, w.dln, s.res2, m.p(blk(l, tLn2w)), s.ln2Mean, s.ln2Rstd, m.g(blk(l, tLn2w)), m.g(blk(l, tLn2b)))
		// Attention branch: dres is ∂L/∂res2.
		toAct()
		linearBack(l, projAttnOut, w.datty, w.dresAct, s.atty, blk(l, tAttProjw), blk(l, tAttProjb), C, C)
		do(d.UnpermuteBackward(p, w.dy, w.datty, B, T, NH, hs))
		// datt = dy · vᵀ; dv = attᵀ · dy
		do(d.GemmBatched(p, T, T, hs, mat(w.dy, at, hs, false), th, mat(s.v, at, hs, true), th, mat(w.datt, cuda.F32, T, false), tt, B*NH, false))
		do(d.GemmBatched(p, T, hs, T, mat(s.att, at, T, true), tt, mat(w.dy, at, hs, false), th, mat(w.dv, at, hs, false), th, B*NH, false))
		do(d.SoftmaxBackward(p, w.dpreatt, s.att, w.datt, scale, B*NH*T, T))
		// dq = dpreatt · k; dk = dpreattᵀ · q (the scale is in dpreatt)
		do(d.GemmBatched(p, T, hs, T, mat(w.dpreatt, at, T, false), tt, mat(s.k, at, hs, false), th, mat(w.dq, at, hs, false), th, B*NH, false))
		do(d.GemmBatched(p, T, hs, T, mat(w.dpreatt, at, T, true), tt, mat(s.q, at, hs, false), th, mat(w.dk, at, hs, false), th, B*NH, false))
		do(d.PermuteQKVBackward(p, w.dqkv, w.dq, w.dk, w.dv, B, T, NH, hs))
		needInput := !frozen || l > 0
		dln1 := w.dln
		if !needInput {
			dln1 = cuda.Buffer{}
		}
		linearBack(l, projQKV, dln1, w.dqkv, s.ln1, blk(l, tQKVw), blk(l, tQKVb), C, 3*C)
		if needInput {
			lnBack(w.dres, w.dln, x, m.p(blk(l, tLn1w)), s.ln1Mean, s.ln1Rstd, m.g(blk(l, tLn1w)), m.g(blk(l, tLn1b)))
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
	// Embeddings: dres is ∂L/∂encoded.
	do(d.EncoderBackwardWPE(m.g(1), w.dres, B, T, C))
	distinct, uerr := m.uploadTokenOrder()
	do(uerr)
	do(d.EncoderBackwardWTE(m.g(0), w.dres, w.order, w.starts, w.utok, distinct, C))
	ready(c.Layers + 1) // wte and wpe
	return bp.err
}

// backwardPass holds what the backward passes of both architectures
// (GPT-2's here, the Llama family's in llama.go) share: the first error of
// the work they queue, column sums, the residual gradient as a GEMM
// operand, and GradReady's reports.
type backwardPass struct {
	m   *Model
	BT  int
	err error
}

// do keeps the first error.
func (b *backwardPass) do(e error) {
	if b.err == nil {
		b.err = e
	}
}

// colsum adds the column sums of src (BT, cols) of type t into dst (cols,
// float32): bias and norm-weight gradients, as a GEMM with a ones vector,
// in float32 accumulation even in TF32 mode.
func (b *backwardPass) colsum(dst, src cuda.Buffer, t cuda.DType, cols int) {
	m, w := b.m, &b.m.bw
	exact := m.Prec
	if exact == cuda.TF32 {
		exact = cuda.FP32
	}
	ones := w.onesF32
	if t != cuda.F32 {
		ones = w.onesAct
	}
	b.do(m.dev.Gemm(exact, 1, cols, b.BT, mat(ones, t, b.BT, false), mat(src, t, cols, false), mat(dst, cuda.F32, cols, false), true))
}

// toAct casts the residual gradient dres into dresAct, its copy as a GEMM
// operand, in BF16 (in the other precisions they are one buffer).
func (b *backwardPass) toAct() {
	m, w := b.m, &b.m.bw
	if m.Prec == cuda.BF16 {
		b.do(m.dev.CastToAct(m.Prec, w.dresAct, w.dres, b.BT*m.Config.Dim))
	}
}

// ready reports range i of what is trained to GradReady, unless queued
// work has failed.
func (b *backwardPass) ready(i int) {
	if b.m.GradReady != nil && b.err == nil {
		r := b.m.tr.gradRanges[i]
		b.m.GradReady(r[0], r[1])
	}
}

// sortScratch is the host side of grouping positions by token.
type sortScratch struct {
	count         []int32 // (Vocab+1)
	order, starts []int32
	utok          []int32
}

// uploadTokenOrder groups the last Forward's positions by token (a
// counting sort, positions in increasing order within a token) and uploads
// the order, each group's start and token; it returns the number of
// distinct tokens.
func (m *Model) uploadTokenOrder() (int, error) {
	s := &m.sortTmp
	V, BT := m.Config.Vocab, len(m.tokens)
	if len(s.count) != V+1 {
		s.count = make([]int32, V+1)
	}
	clear(s.count)
	for _, t := range m.tokens {
		s.count[t+1]++
	}
	s.starts, s.utok = s.starts[:0], s.utok[:0]
	for t := 0; t < V; t++ {
		if s.count[t+1] > 0 {
			s.utok = append(s.utok, int32(t))
			s.starts = append(s.starts, s.count[t])
		}
		s.count[t+1] += s.count[t]
	}
	s.starts = append(s.starts, int32(BT))
	if cap(s.order) < BT {
		s.order = make([]int32, BT)
	}
	s.order = s.order[:BT]
	for i, t := range m.tokens {
		s.order[s.count[t]] = int32(i)
		s.count[t]++
	}
	w := &m.bw
	if err := m.dev.UploadI32(w.order, s.order); err != nil {
		return 0, err
	}
	if err := m.dev.UploadI32(w.starts, s.starts); err != nil {
		return 0, err
	}
	return len(s.utok), m.dev.UploadI32(w.utok, s.utok)
}

// ClipGradNorm returns the L2 norm of the gradient and, when it exceeds
// maxNorm > 0, makes the next AdamW use the gradient scaled by
// maxNorm/(norm + 1e-6), as kernels.ClipGradNorm does (the buffer itself is
// left as it is). It waits for the device, so errors of queued work come
// back here.
func (m *Model) ClipGradNorm(maxNorm float32) (float32, error) {
	if m.inference {
		return 0, fmt.Errorf("cudamodel: ClipGradNorm on a model made by NewInference")
	}
	unlock := m.dev.Lock()
	defer unlock()
	if err := m.dev.SumSqPartials(m.bw.partials, m.tr.grads, m.tr.n); err != nil {
		return 0, err
	}
	if err := m.dev.DownloadF64(m.partials, m.bw.partials); err != nil {
		return 0, err
	}
	var sum float64
	for _, s := range m.partials {
		sum += s
	}
	norm := float32(math.Sqrt(sum))
	m.gradScale = 1
	if maxNorm > 0 {
		if coef := maxNorm / (norm + 1e-6); coef < 1 {
			m.gradScale = coef
		}
	}
	return norm, nil
}

// AdamWConfig are the optimizer's settings.
type AdamWConfig struct {
	Beta1, Beta2, Eps, WeightDecay float32
}

// AdamW applies update number step (1-based) at learning rate lr to every
// parameter, with weight decay where the layout says (Param.Decay), as
// train.Optimizer.Apply does on the CPU, and the clipping factor of the
// last ClipGradNorm (which it then resets).
func (m *Model) AdamW(cfg AdamWConfig, lr float32, step int) error {
	if m.inference {
		return fmt.Errorf("cudamodel: AdamW on a model made by NewInference")
	}
	if step < 1 {
		return fmt.Errorf("cudamodel: AdamW step %d, want ≥ 1", step)
	}
	unlock := m.dev.Lock()
	defer unlock()
	bc1 := 1 - math.Pow(float64(cfg.Beta1), float64(step))
	bc2 := 1 - math.Pow(float64(cfg.Beta2), float64(step))
	args := cuda.AdamWArgs{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.Eps,
		StepSize: float32(float64(lr) / bc1), BC2Sqrt: float32(math.Sqrt(bc2)), GradScale: m.gradScale}
	t := m.tr
	var pact cuda.Buffer
	for i := 0; i < len(t.layout); {
		j := i
		for j+1 < len(t.layout) && t.layout[j+1].Decay == t.layout[i].Decay {
			j++
		}
		lo, hi := t.layout[i].Offset, t.layout[j].Offset+t.layout[j].Size
		args.Decay = 1
		if t.layout[i].Decay {
			args.Decay = 1 - lr*cfg.WeightDecay
		}
		if m.Prec == cuda.BF16 {
			pact = t.pact.Off(2 * int64(lo))
		}
		off := 4 * int64(lo)
		if err := m.dev.AdamW(m.Prec, t.params.Off(off), pact, t.grads.Off(off), t.mom.Off(off), t.vel.Off(off), hi-lo, args); err != nil {
			return err
		}
		i = j + 1
	}
	m.gradScale = 1
	return nil
}

// Sync waits for the queued work and returns its first error.
func (m *Model) Sync() error {
	unlock := m.dev.Lock()
	defer unlock()
	return m.dev.Sync()
}
