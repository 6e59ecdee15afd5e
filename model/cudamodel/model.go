// Package cudamodel is braid's model on a CUDA GPU, GPT-2 and the Llama
// family (Llama, Mistral, Qwen2; llama.go): the same architectures,
// parameter layout and numerics as package model (which stays the
// reference), with parameters, gradients, optimizer moments and
// activations in device memory and every operation run by package cuda's
// kernels and cuBLAS.
//
// Precision is chosen per model: FP32 (float32 throughout, GEMMs in strict
// float32), TF32 (the same with TF32 tensor-core GEMMs) or BF16 (mixed
// precision like PyTorch's bf16 autocast: float32 master weights,
// gradients, AdamW moments, residual stream, LayerNorm statistics, softmax
// and loss; bfloat16 GEMM operands and activations, float32 accumulation).
//
// The training step stays on the device: Forward, Backward, ClipGradNorm
// and AdamW queue work and wait only where a result comes back to the host
// (the loss, the gradient norm). ReadParams/WriteParams and
// ReadMoments/WriteMoments move state to and from package model's host
// buffers, in the same flat layout, for checkpoints, snapshots and
// evaluation on the CPU.
//
// Results are deterministic for a given device, precision and batch: no
// kernel uses atomics (the token-embedding gradient sums each token's
// positions in order, the gradient norm adds fixed partial sums in order).
//
// A Model is not safe for concurrent use. What this package does not do:
// LoRA adapters (they train on the CPU for now), or moving gradients to a
// ring all-reduce (package train's Worker does that with GradReady).
package cudamodel

import (
	"errors"
	"fmt"
	"math"

	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/model"
)

// Model is a model on one GPU.
type Model struct {
	Config model.Config
	Prec   cuda.Precision

	dev        *cuda.Device
	maxB, maxT int
	vp         int // logits row stride: Vocab rounded up to 64 (aligned rows)
	// vg is the vocabulary width of the logits GEMMs: vp when the flat
	// buffer holds vp-V rows after wte (wpe's first rows), whose products
	// land only in padding columns that nothing reads (forward) or that are
	// zero (backward); else Vocab. cuBLAS runs a width that is a multiple of
	// 64 several times faster than GPT-2's 50257.
	vg        int
	inference bool
	layout    []model.Param
	n         int // parameters

	params cuda.Buffer // float32 (n): the model's weights
	pact   cuda.Buffer // the weights as activations (BF16), else params
	// base is the full model as what is trained (its gradient and AdamW
	// moments); tr is what the optimizer works on: &base, or the attached
	// LoRA adapter's set (lora.go).
	base trainSet
	tr   *trainSet
	ad   *adapter // the attached LoRA adapter, or nil

	act   activations
	bw    backwardScratch
	llama *llamaState   // the Llama family's buffers (llama.go), or nil for GPT-2
	bufs  []cuda.Buffer // every allocation, for Close

	// state of the last Forward call
	B, T     int
	counted  int
	tokens   []int32 // (B, T) host copy, for the embedding backward's order
	targets  bool
	hostLoss []float32
	partials []float64
	sortTmp  sortScratch

	gradScale float32 // ClipGradNorm's factor, applied by AdamW

	// GradReady, when set, is called during Backward each time a range
	// [lo, hi) of the gradient buffer has had its last kernel queued: the
	// ranges of model.Model.GradRanges, in the same order (ln_f, blocks
	// L-1 .. 0, then wte and wpe). The work is queued, not done: a caller
	// that copies the range out orders its copy after the compute stream's
	// work so far (cuda.Device.CopyToHostAfter). It is called with the
	// device locked, on the goroutine that runs Backward, and must not call
	// the Model.
	GradReady func(lo, hi int)
}

// trainSet is a flat buffer being trained: weights, their activation-typed
// copy, gradient and AdamW moments, with the layout that names its
// tensors (and says which decay), and the ranges GradReady reports.
type trainSet struct {
	params, pact, grads, mom, vel cuda.Buffer
	layout                        []model.Param
	n                             int
	gradRanges                    [][2]int
}

type activations struct {
	tokens, targets cuda.Buffer // int32 (BT)
	encoded         cuda.Buffer // f32 (BT, C)
	blocks          []blockActs
	lnf             cuda.Buffer // act (BT, C)
	lnfMean         cuda.Buffer // f32 (BT)
	lnfRstd         cuda.Buffer // f32 (BT)
	logits          cuda.Buffer // act (BT, Vp); Backward turns it into dlogits in place
	losses, lse     cuda.Buffer // f32 (BT)
	preatt          cuda.Buffer // f32 (B, NH, T, T) scratch
	y               cuda.Buffer // act (B, NH, T, hs) scratch
}

type blockActs struct {
	ln1, ln1Mean, ln1Rstd cuda.Buffer // act (BT, C), f32 (BT), f32 (BT)
	qkv                   cuda.Buffer // act (BT, 3C)
	q, k, v               cuda.Buffer // act (B, NH, T, hs)
	att                   cuda.Buffer // act (B, NH, T, T)
	atty                  cuda.Buffer // act (BT, C)
	attproj               cuda.Buffer // act (BT, C)
	res2                  cuda.Buffer // f32 (BT, C)
	ln2, ln2Mean, ln2Rstd cuda.Buffer
	fch, fchGelu          cuda.Buffer // act (BT, 4C)
	fcproj                cuda.Buffer // act (BT, C)
	res3                  cuda.Buffer // f32 (BT, C)
}

type backwardScratch struct {
	dres             cuda.Buffer // f32 (BT, C)
	dresAct          cuda.Buffer // act (BT, C): dres as GEMM operand (BF16), else dres
	dln, datty, dy   cuda.Buffer // act (BT, C)
	dq, dk, dv       cuda.Buffer // act (B, NH, T, hs)
	dqkv             cuda.Buffer // act (BT, 3C)
	dfch, dfchG      cuda.Buffer // act (BT, 4C)
	datt             cuda.Buffer // f32 (B, NH, T, T)
	dpreatt          cuda.Buffer // act (B, NH, T, T)
	dwx              cuda.Buffer // f32 (BT, C) LayerNorm dout·x̂
	onesF32, onesAct cuda.Buffer // (BT) ones, for column sums as GEMMs
	order, starts    cuda.Buffer // int32: positions grouped by token, group starts
	utok             cuda.Buffer // int32: each group's token
	partials         cuda.Buffer // f64 (cuda.SumSqBlocks)
}

// ErrOutOfMemory is wrapped when the model does not fit the GPU.
var ErrOutOfMemory = cuda.ErrOutOfMemory

// MemoryBytes estimates the device memory New (or NewInference) needs for
// config c, a batch of maxB × maxT and precision p.
func MemoryBytes(c model.Config, maxB, maxT int, p cuda.Precision, inference bool) int64 {
	if c.Arch != model.ArchGPT2 {
		return llamaMemoryBytes(c, maxB, maxT, p, inference)
	}
	a := p.ActBytes()
	BT, C, V, NH, L := int64(maxB)*int64(maxT), int64(c.Dim), int64(roundUp(c.Vocab, 64)), int64(c.Heads), int64(c.Layers)
	att := int64(maxB) * NH * int64(maxT) * int64(maxT)
	n := int64(c.NumParams())
	perLayer := BT*C*a*(1+3+3+1+1+1+4+4+1) + BT*C*4*2 + 4*BT*4 + att*a
	total := 4*n + L*perLayer + BT*C*4 + BT*C*a + 4*BT*4 + BT*V*a + att*4 + BT*C*a + 8*BT
	if p == cuda.BF16 {
		total += 2 * n
	}
	if !inference {
		total += 12*n + BT*C*4*2 + BT*C*a*(3+3+3+8) + att*(4+a) + BT*(4+a) + 12*BT
	}
	return total
}

func roundUp(x, m int) int { return (x + m - 1) / m * m }

// New allocates a model of config c on dev for training with batches of up
// to maxB sequences of up to maxT tokens, in precision p. Parameters are
// zero until WriteParams. When the GPU lacks the memory, the error says
// what was asked, what is free, and which settings lower it.
func New(dev *cuda.Device, c model.Config, maxB, maxT int, p cuda.Precision) (*Model, error) {
	return newModel(dev, c, maxB, maxT, p, false)
}

// NewInference is New without gradients, moments or backward buffers: for
// evaluation and generation.
func NewInference(dev *cuda.Device, c model.Config, maxB, maxT int, p cuda.Precision) (*Model, error) {
	return newModel(dev, c, maxB, maxT, p, true)
}

func newModel(dev *cuda.Device, c model.Config, maxB, maxT int, p cuda.Precision, inference bool) (m *Model, err error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	llama := c.Arch != model.ArchGPT2
	if maxB < 1 || maxT < 1 || maxT > c.Context {
		return nil, fmt.Errorf("%w: batch %d×%d does not fit (want ≥ 1 sequences of 1..%d tokens)", model.ErrConfig, maxB, maxT, c.Context)
	}
	if llama {
		if err := checkLlama(c, maxT); err != nil {
			return nil, err
		}
	}
	// The kernels index every buffer with 32-bit integers, which must not
	// overflow when a grid-stride loop steps past the end (by at most
	// cuda.MaxGridStride).
	BT64 := int64(maxB) * int64(maxT)
	for _, n := range []int64{BT64 * int64(roundUp(c.Vocab, 64)), BT64 * 4 * int64(c.Dim), int64(maxB) * int64(c.Heads) * int64(maxT) * int64(maxT), int64(c.NumParams()),
		BT64 * 2 * int64(c.Hidden), BT64 * int64(c.Heads+2*c.KVHeads) * int64(c.HeadDim)} {
		if n > math.MaxInt32-cuda.MaxGridStride {
			return nil, fmt.Errorf("%w: a batch of %d×%d needs buffers of more than 2³¹ elements (%d) on the GPU; lower the batch (--batch, --micro-batch) or the sequence length (--seq-len)", model.ErrConfig, maxB, maxT, n)
		}
	}
	m = &Model{Config: c, Prec: p, dev: dev, maxB: maxB, maxT: maxT, vp: roundUp(c.Vocab, 64), inference: inference,
		layout: c.Layout(), n: c.NumParams(), gradScale: 1}
	// The head is wte (GPT-2), or the Llama family's tied embedding or
	// lm_head, the last tensor.
	headEnd := c.Vocab * c.Dim
	if llama && c.Untied {
		headEnd = c.NumParams()
	}
	m.vg = c.Vocab
	if c.NumParams()-headEnd >= (m.vp-c.Vocab)*c.Dim {
		m.vg = m.vp
	}
	var ranges [][2]int
	if llama {
		per := (len(m.layout) - 2) / c.Layers
		if c.Untied {
			per = (len(m.layout) - 3) / c.Layers
		}
		ranges = llamaGradRanges(m.layout, c.Layers, per)
	} else {
		ranges = gradRanges(m.layout, c.Layers)
	}
	m.base = trainSet{layout: m.layout, n: m.n, gradRanges: ranges}
	m.tr = &m.base
	unlock := dev.Lock()
	defer unlock()
	if need := MemoryBytes(c, maxB, maxT, p, inference); need > 0 {
		if free, _ := dev.MemInfo(); need > free {
			return nil, fmt.Errorf("%w on %s: the model with batch %d×%d in %v needs about %.1f GiB and %.1f GiB are free; lower the batch (--batch) or the sequence length (--seq-len), or use --precision bf16",
				cuda.ErrOutOfMemory, dev.Info, maxB, maxT, p, float64(need)/(1<<30), float64(free)/(1<<30))
		}
	}
	defer func() {
		if err != nil {
			m.free()
			if errors.Is(err, cuda.ErrOutOfMemory) {
				err = fmt.Errorf("%w\n(the model with batch %d×%d in %v needs about %.1f GiB; lower the batch (--batch) or the sequence length (--seq-len), or use --precision bf16)",
					err, maxB, maxT, p, float64(MemoryBytes(c, maxB, maxT, p, inference))/(1<<30))
			}
		}
	}()
	ab, BT := p.ActBytes(), int64(maxB*maxT)
	alloc := func(bytes int64, what string) cuda.Buffer {
		if err != nil {
			return cuda.Buffer{}
		}
		var b cuda.Buffer
		b, err = dev.Alloc(bytes, what)
		if err == nil {
			m.bufs = append(m.bufs, b)
		}
		return b
	}
	n := int64(m.n)
	m.params = alloc(4*n, "parameters")
	m.pact = m.params
	if p == cuda.BF16 {
		m.pact = alloc(2*n, "bf16 weights")
	}
	if llama {
		m.allocLlama(alloc, inference)
	} else {
		m.allocGPT2(alloc, inference)
	}
	m.hostLoss = make([]float32, BT)
	if llama && err == nil {
		err = m.initLlama()
	}
	if inference || err != nil {
		return m, err
	}
	m.base.grads, m.base.mom, m.base.vel = alloc(4*n, "gradients"), alloc(4*n, "AdamW moments"), alloc(4*n, "AdamW moments")
	m.base.params, m.base.pact = m.params, m.pact
	d := &m.bw
	d.onesF32, d.onesAct = alloc(4*BT, "ones"), alloc(ab*BT, "ones")
	d.order, d.starts, d.utok = alloc(4*BT, "token order"), alloc(4*(BT+1), "token order"), alloc(4*BT, "token order")
	d.partials = alloc(8*cuda.SumSqBlocks, "norm partials")
	if err != nil {
		return m, err
	}
	m.partials = make([]float64, cuda.SumSqBlocks)
	if err = dev.Fill(cuda.FP32, d.onesF32, 1, int(BT)); err != nil {
		return m, err
	}
	if err = dev.Fill(p, d.onesAct, 1, int(BT)); err != nil {
		return m, err
	}
	if err = m.zero(m.base.mom, m.base.vel, m.base.grads); err != nil {
		return m, err
	}
	return m, dev.Sync()
}

// allocGPT2 allocates GPT-2's activations (and, for training, its backward
// scratch) with alloc, newModel's allocator, which records the first error.
func (m *Model) allocGPT2(alloc func(int64, string) cuda.Buffer, inference bool) {
	c, ab := m.Config, m.Prec.ActBytes()
	BT, C, V, NH := int64(m.maxB*m.maxT), int64(c.Dim), int64(m.vp), int64(c.Heads)
	att := int64(m.maxB) * NH * int64(m.maxT) * int64(m.maxT)
	a := &m.act
	a.tokens, a.targets = alloc(4*BT, "tokens"), alloc(4*BT, "targets")
	a.encoded = alloc(4*BT*C, "embeddings")
	for l := 0; l < c.Layers; l++ {
		a.blocks = append(a.blocks, blockActs{
			ln1: alloc(ab*BT*C, "activations"), ln1Mean: alloc(4*BT, "activations"), ln1Rstd: alloc(4*BT, "activations"),
			qkv: alloc(ab*BT*3*C, "activations"), q: alloc(ab*BT*C, "activations"), k: alloc(ab*BT*C, "activations"),
			v: alloc(ab*BT*C, "activations"), att: alloc(ab*att, "attention"), atty: alloc(ab*BT*C, "activations"),
			attproj: alloc(ab*BT*C, "activations"), res2: alloc(4*BT*C, "activations"),
			ln2: alloc(ab*BT*C, "activations"), ln2Mean: alloc(4*BT, "activations"), ln2Rstd: alloc(4*BT, "activations"),
			fch: alloc(ab*BT*4*C, "activations"), fchGelu: alloc(ab*BT*4*C, "activations"),
			fcproj: alloc(ab*BT*C, "activations"), res3: alloc(4*BT*C, "activations"),
		})
	}
	a.lnf, a.lnfMean, a.lnfRstd = alloc(ab*BT*C, "activations"), alloc(4*BT, "activations"), alloc(4*BT, "activations")
	a.logits = alloc(ab*BT*V, "logits")
	a.losses, a.lse = alloc(4*BT, "losses"), alloc(4*BT, "losses")
	a.preatt = alloc(4*att, "attention scores")
	a.y = alloc(ab*BT*C, "activations")
	if inference {
		return
	}
	d := &m.bw
	d.dres = alloc(4*BT*C, "backward scratch")
	d.dresAct = d.dres
	if m.Prec == cuda.BF16 {
		d.dresAct = alloc(ab*BT*C, "backward scratch")
	}
	d.dln, d.datty, d.dy = alloc(ab*BT*C, "backward scratch"), alloc(ab*BT*C, "backward scratch"), alloc(ab*BT*C, "backward scratch")
	d.dq, d.dk, d.dv = alloc(ab*BT*C, "backward scratch"), alloc(ab*BT*C, "backward scratch"), alloc(ab*BT*C, "backward scratch")
	d.dqkv = alloc(ab*BT*3*C, "backward scratch")
	d.dfch, d.dfchG = alloc(ab*BT*4*C, "backward scratch"), alloc(ab*BT*4*C, "backward scratch")
	d.datt, d.dpreatt = alloc(4*att, "attention backward"), alloc(ab*att, "attention backward")
	d.dwx = alloc(4*BT*C, "backward scratch")
}

func (m *Model) zero(bufs ...cuda.Buffer) error {
	for _, b := range bufs {
		if err := m.dev.Zero(b, b.Bytes); err != nil {
			return err
		}
	}
	return nil
}

func (m *Model) free() {
	for _, b := range m.bufs {
		m.dev.Free(b)
	}
	m.bufs = nil
}

// Close frees the model's device memory.
func (m *Model) Close() {
	unlock := m.dev.Lock()
	defer unlock()
	m.dev.Sync()
	m.free()
}

// gradRanges are model.Model.GradRanges for a full model: ln_f, the
// blocks last first, then wte and wpe.
func gradRanges(layout []model.Param, layers int) [][2]int {
	lnf := layout[len(layout)-2].Offset
	end := layout[len(layout)-1].Offset + layout[len(layout)-1].Size
	rs := [][2]int{{lnf, end}}
	for l := layers - 1; l >= 0; l-- {
		first, last := layout[2+l*perBlock], layout[2+(l+1)*perBlock-1]
		rs = append(rs, [2]int{first.Offset, last.Offset + last.Size})
	}
	return append(rs, [2]int{0, layout[1].Offset + layout[1].Size})
}

// GradRanges returns the ranges GradReady reports, in order (a copy): of
// the model's gradient, or of the attached adapter's.
func (m *Model) GradRanges() [][2]int { return append([][2]int(nil), m.tr.gradRanges...) }

// Grads is the device's float32 gradient buffer of what is trained (the
// model, or the attached adapter), for copies out of it.
func (m *Model) Grads() cuda.Buffer { return m.tr.grads }

// NumTrainable is the length of what is trained: the model's parameters,
// or the attached adapter's.
func (m *Model) NumTrainable() int { return m.tr.n }

// Device is the GPU the model lives on.
func (m *Model) Device() *cuda.Device { return m.dev }

// MaxBatch returns the largest batch the activations hold.
func (m *Model) MaxBatch() (B, T int) { return m.maxB, m.maxT }

// NumParams is the length of the flat parameter buffer.
func (m *Model) NumParams() int { return m.n }

// WriteParams uploads the flat float32 parameters (model.Model.Params'
// layout) to the device.
func (m *Model) WriteParams(params []float32) error {
	if len(params) != m.n {
		return fmt.Errorf("cudamodel: %d parameters given for a model of %d", len(params), m.n)
	}
	unlock := m.dev.Lock()
	defer unlock()
	if err := m.dev.UploadF32(m.params, params); err != nil {
		return err
	}
	if m.Prec == cuda.BF16 {
		if err := m.dev.CastToAct(m.Prec, m.pact, m.params, m.n); err != nil {
			return err
		}
	}
	return m.dev.Sync()
}

// ReadParams downloads the float32 master parameters into params.
func (m *Model) ReadParams(params []float32) error {
	if len(params) != m.n {
		return fmt.Errorf("cudamodel: %d parameters asked of a model of %d", len(params), m.n)
	}
	unlock := m.dev.Lock()
	defer unlock()
	return m.dev.DownloadF32(params, m.params)
}

// ReadGrads downloads the gradient of what is trained (as Backward left it).
func (m *Model) ReadGrads(grads []float32) error {
	if m.inference || len(grads) != m.tr.n {
		return fmt.Errorf("cudamodel: ReadGrads of %d on a model of %d (inference %v)", len(grads), m.tr.n, m.inference)
	}
	unlock := m.dev.Lock()
	defer unlock()
	return m.dev.DownloadF32(grads, m.tr.grads)
}

// WriteGrads uploads a gradient (e.g. one reduced across workers) into the
// gradient buffer, replacing it.
func (m *Model) WriteGrads(grads []float32) error {
	if m.inference || len(grads) != m.tr.n {
		return fmt.Errorf("cudamodel: WriteGrads of %d on a model of %d", len(grads), m.tr.n)
	}
	unlock := m.dev.Lock()
	defer unlock()
	return m.dev.UploadF32(m.tr.grads, grads)
}

// ReadMoments downloads AdamW's first and second moments.
func (m *Model) ReadMoments(mom, vel []float32) error {
	if m.inference || len(mom) != m.tr.n || len(vel) != m.tr.n {
		return fmt.Errorf("cudamodel: ReadMoments of %d, %d on a model of %d", len(mom), len(vel), m.tr.n)
	}
	unlock := m.dev.Lock()
	defer unlock()
	if err := m.dev.DownloadF32(mom, m.tr.mom); err != nil {
		return err
	}
	return m.dev.DownloadF32(vel, m.tr.vel)
}

// WriteMoments uploads AdamW's moments (a resumed or caught-up run).
func (m *Model) WriteMoments(mom, vel []float32) error {
	if m.inference || len(mom) != m.tr.n || len(vel) != m.tr.n {
		return fmt.Errorf("cudamodel: WriteMoments of %d, %d on a model of %d", len(mom), len(vel), m.tr.n)
	}
	unlock := m.dev.Lock()
	defer unlock()
	if err := m.dev.UploadF32(m.tr.mom, mom); err != nil {
		return err
	}
	if err := m.dev.UploadF32(m.tr.vel, vel); err != nil {
		return err
	}
	return m.dev.Sync()
}

// ReadTrainable downloads the float32 weights of what is trained: the
// model's (ReadParams), or the attached adapter's.
func (m *Model) ReadTrainable(dst []float32) error {
	if len(dst) != m.tr.n {
		return fmt.Errorf("cudamodel: %d trainable parameters asked of %d", len(dst), m.tr.n)
	}
	unlock := m.dev.Lock()
	defer unlock()
	return m.dev.DownloadF32(dst, m.tr.params)
}

// WriteTrainable uploads the weights of what is trained: the model's
// (WriteParams), or the attached adapter's.
func (m *Model) WriteTrainable(src []float32) error {
	if m.tr == &m.base {
		return m.WriteParams(src)
	}
	if len(src) != m.tr.n {
		return fmt.Errorf("cudamodel: %d trainable parameters given for %d", len(src), m.tr.n)
	}
	unlock := m.dev.Lock()
	defer unlock()
	if err := m.dev.UploadF32(m.tr.params, src); err != nil {
		return err
	}
	if m.Prec == cuda.BF16 {
		if err := m.dev.CastToAct(m.Prec, m.tr.pact, m.tr.params, m.tr.n); err != nil {
			return err
		}
	}
	return m.dev.Sync()
}
