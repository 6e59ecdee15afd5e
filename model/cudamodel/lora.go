package cudamodel

import (
	"fmt"
	"strings"

	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/model"
)

// A LoRA adapter on the GPU: the same maths as package model's (lora.go
// there), without dropout. With an adapter attached the base weights are
// frozen: Backward computes only what the adapter's gradient needs, and
// ZeroGrad, ClipGradNorm, AdamW, the gradient and moment transfers and
// GradRanges are the adapter's.

// Projections of a block, in the adapter's buffer order
// (model.LoRAProjectionShape's numbering): GPT-2's four, then the Llama
// family's seven. A model has one architecture's.
const (
	projQKV = iota
	projAttnOut
	projFC
	projMLPOut
	projQ
	projK
	projV
	projO
	projGate
	projUp
	projDown
	numProjections
)

var projNames = [numProjections]string{".attn.c_attn.", ".attn.c_proj.", ".mlp.c_fc.", ".mlp.c_proj.",
	".self_attn.q_proj.", ".self_attn.k_proj.", ".self_attn.v_proj.", ".self_attn.o_proj.", ".mlp.gate_proj.", ".mlp.up_proj.", ".mlp.down_proj."}

// adapter is the attached adapter's device state.
type adapter struct {
	set   trainSet
	rank  int
	scale float32
	// per block and projection: A's and B's offsets in the flat buffer (−1:
	// not adapted)
	a, b [][numProjections]int
	u    [][numProjections]cuda.Buffer // act (BT, r): s·x·Aᵀ, saved by forward
	g    cuda.Buffer                   // act (BT, r): backward scratch
}

// AttachLoRA puts adapter a (its current weights) on the device: from now
// on Forward adds its update and Backward trains it alone. LoRA dropout is
// not available on the GPU yet. For inference, merge the adapter into the
// weights instead (model.MergeLoRA).
func (m *Model) AttachLoRA(a *model.LoRA) (err error) {
	switch {
	case m.inference:
		return fmt.Errorf("cudamodel: AttachLoRA on an inference model; merge the adapter instead (model.MergeLoRA)")
	case m.ad != nil:
		return fmt.Errorf("cudamodel: an adapter is attached already")
	case a.Base != m.Config:
		return fmt.Errorf("cudamodel: the adapter is for a model of %+v, this one is %+v", a.Base, m.Config)
	case a.Config.Dropout != 0:
		return fmt.Errorf("cudamodel: LoRA dropout (%g) is not available on the GPU yet: use dropout 0, or the CPU", a.Config.Dropout)
	}
	L := m.Config.Layers
	ad := &adapter{rank: a.Config.Rank, scale: float32(a.Config.Scale()),
		a: make([][numProjections]int, L), b: make([][numProjections]int, L), u: make([][numProjections]cuda.Buffer, L)}
	for l := range L {
		for p := range numProjections {
			ad.a[l][p], ad.b[l][p] = -1, -1
		}
	}
	layout := a.Layout()
	spans := make([][2]int, L)
	for i := range spans {
		spans[i] = [2]int{-1, -1}
	}
	for _, p := range layout {
		// the block: transformer.h.N. (GPT-2) or model.layers.N. (Llama)
		var l int
		marker := ".h."
		if !strings.Contains(p.Name, marker) {
			marker = ".layers."
		}
		i := strings.Index(p.Name, marker)
		if i < 0 {
			return fmt.Errorf("cudamodel: adapter tensor %s: no block", p.Name)
		}
		if _, err := fmt.Sscanf(p.Name[i+len(marker):], "%d", &l); err != nil || l < 0 || l >= L {
			return fmt.Errorf("cudamodel: adapter tensor %s: no block", p.Name)
		}
		proj := -1
		for i, n := range projNames {
			if strings.Contains(p.Name, n) {
				proj = i
			}
		}
		switch {
		case proj < 0:
			return fmt.Errorf("cudamodel: adapter tensor %s: unknown projection", p.Name)
		case strings.HasSuffix(p.Name, "lora_A.weight"):
			ad.a[l][proj] = p.Offset
		default:
			ad.b[l][proj] = p.Offset
		}
		if spans[l][0] < 0 {
			spans[l][0] = p.Offset
		}
		spans[l][1] = p.Offset + p.Size
	}
	n := a.NumParams()
	ad.set = trainSet{layout: layout, n: n}
	for l := L - 1; l >= 0; l-- {
		ad.set.gradRanges = append(ad.set.gradRanges, spans[l])
	}
	unlock := m.dev.Lock()
	defer unlock()
	var bufs []cuda.Buffer
	alloc := func(bytes int64, what string) cuda.Buffer {
		if err != nil {
			return cuda.Buffer{}
		}
		var b cuda.Buffer
		if b, err = m.dev.Alloc(bytes, what); err == nil {
			bufs = append(bufs, b)
		}
		return b
	}
	defer func() {
		if err != nil {
			for _, b := range bufs {
				m.dev.Free(b)
			}
		}
	}()
	s := &ad.set
	s.params, s.grads = alloc(4*int64(n), "the adapter"), alloc(4*int64(n), "the adapter's gradient")
	s.mom, s.vel = alloc(4*int64(n), "the adapter's AdamW moments"), alloc(4*int64(n), "the adapter's AdamW moments")
	s.pact = s.params
	if m.Prec == cuda.BF16 {
		s.pact = alloc(2*int64(n), "the adapter")
	}
	ab, BT := m.Prec.ActBytes(), int64(m.maxB*m.maxT)
	for l := range L {
		for p := range numProjections {
			if ad.a[l][p] >= 0 {
				ad.u[l][p] = alloc(ab*BT*int64(ad.rank), "adapter activations")
			}
		}
	}
	ad.g = alloc(ab*BT*int64(ad.rank), "adapter scratch")
	if err != nil {
		return err
	}
	if err = m.zero(s.grads, s.mom, s.vel); err != nil {
		return err
	}
	if err = m.dev.UploadF32(s.params, a.Params); err != nil {
		return err
	}
	if m.Prec == cuda.BF16 {
		if err = m.dev.CastToAct(m.Prec, s.pact, s.params, n); err != nil {
			return err
		}
	}
	if err = m.dev.Sync(); err != nil {
		return err
	}
	m.bufs = append(m.bufs, bufs...) // the model frees them from now on
	m.ad, m.tr = ad, &ad.set
	return nil
}

// adapted says whether projection p of block l has an adapter.
func (m *Model) adapted(l, p int) bool { return m.ad != nil && m.ad.a[l][p] >= 0 }

// adapterMat returns A (r, in) or B (out, r) of projection p of block l as
// a GEMM operand of activation type.
func (m *Model) adapterMat(off, ld int, trans bool) cuda.Mat {
	return mat(m.ad.set.pact.Off(m.Prec.ActBytes()*int64(off)), m.Prec.Act(), ld, trans)
}

// loraForward adds the adapter's update to out (BT, o; rows ldo apart:
// the projection's columns of a stacked output), the output of projection
// p of block l on inp (BT, in): u = s·inp·Aᵀ, out += u·Bᵀ.
func (m *Model) loraForward(l, p int, out cuda.Buffer, ldo int, inp cuda.Buffer, BT int) error {
	in, o := model.LoRAProjectionShape(m.Config, p)
	ad, d, at := m.ad, m.dev, m.Prec.Act()
	r := ad.rank
	if err := d.GemmScaled(m.Prec, BT, r, in, mat(inp, at, in, false), m.adapterMat(ad.a[l][p], in, true), mat(ad.u[l][p], at, r, false), ad.scale, false); err != nil {
		return err
	}
	return d.Gemm(m.Prec, BT, o, r, mat(ad.u[l][p], at, r, false), m.adapterMat(ad.b[l][p], r, true), mat(out, at, ldo, false), true)
}

// loraBackward adds the adapter's gradients for projection p of block l
// given dout (BT, o; rows ldd apart) and the forward input inp (BT, in),
// and its share of the input gradient into dinp (when dinp.Ptr != 0):
//
//	dB += doutᵀ·u;  g = s·dout·B;  dA += gᵀ·inp;  dinp += g·A
func (m *Model) loraBackward(l, p int, dinp, dout cuda.Buffer, ldd int, inp cuda.Buffer, BT int) error {
	in, o := model.LoRAProjectionShape(m.Config, p)
	ad, d, at, pr := m.ad, m.dev, m.Prec.Act(), m.Prec
	r := ad.rank
	gA, gB := ad.set.grads.Off(4*int64(ad.a[l][p])), ad.set.grads.Off(4*int64(ad.b[l][p]))
	for _, e := range []error{
		d.Gemm(pr, o, r, BT, mat(dout, at, ldd, true), mat(ad.u[l][p], at, r, false), mat(gB, cuda.F32, r, false), true),
		d.GemmScaled(pr, BT, r, o, mat(dout, at, ldd, false), m.adapterMat(ad.b[l][p], r, false), mat(ad.g, at, r, false), ad.scale, false),
		d.Gemm(pr, r, in, BT, mat(ad.g, at, r, true), mat(inp, at, in, false), mat(gA, cuda.F32, in, false), true),
	} {
		if e != nil {
			return e
		}
	}
	if dinp.Ptr == 0 {
		return nil
	}
	return d.Gemm(pr, BT, in, r, mat(ad.g, at, r, false), m.adapterMat(ad.a[l][p], in, false), mat(dinp, at, in, false), true)
}
