package kernels

import (
	"math"
	"sync"
)

// AdamWParams are the hyper-parameters of one AdamW update.
type AdamWParams struct {
	LR, Beta1, Beta2, Eps, WeightDecay float32
	Step                               int // 1 for the first update (bias correction)
}

// AdamW applies one AdamW update (decoupled weight decay, bias-corrected
// moments) in place, in the form of torch.optim.AdamW (it agrees with
// PyTorch to float32 rounding, not bitwise: PyTorch updates m with lerp and
// divides before scaling):
//
//	p ← p − lr·wd·p
//	m ← β1·m + (1−β1)·g
//	v ← β2·v + (1−β2)·g²
//	p ← p − (lr/(1−β1^t)) · m / (sqrt(v)/sqrt(1−β2^t) + ε)
//
// params, grads, m and v have the same length. The update is elementwise and
// its result does not depend on the thread count, so every replica that
// applies it to the same bytes gets the same bytes.
func AdamW(params, grads, m, v []float32, hp AdamWParams) {
	n := len(params)
	need("AdamW grads", grads, n)
	need("AdamW m", m, n)
	need("AdamW v", v, n)
	if hp.Step < 1 {
		panic("kernels: AdamW: Step must be ≥ 1")
	}
	bc1 := 1 - math.Pow(float64(hp.Beta1), float64(hp.Step))
	bc2 := 1 - math.Pow(float64(hp.Beta2), float64(hp.Step))
	adamTasks.run(n, 4096, adamTask{p: params, g: grads, m: m, v: v, hp: hp,
		stepSize: float32(float64(hp.LR) / bc1), bc2Sqrt: float32(math.Sqrt(bc2))})
}

type adamTask struct {
	p, g, m, v        []float32
	hp                AdamWParams
	stepSize, bc2Sqrt float32
}

var adamTasks taskPool[adamTask, *adamTask]

func (t *adamTask) Run(lo, hi int) {
	p, g, m, v := t.p[lo:hi], t.g[lo:hi], t.m[lo:hi], t.v[lo:hi]
	b1, b2, decay := t.hp.Beta1, t.hp.Beta2, 1-t.hp.LR*t.hp.WeightDecay
	for i := range p {
		gi := g[i]
		mi := b1*m[i] + (1-b1)*gi
		vi := b2*v[i] + (1-b2)*gi*gi
		m[i], v[i] = mi, vi
		denom := float32(math.Sqrt(float64(vi)))/t.bc2Sqrt + t.hp.Eps
		p[i] = p[i]*decay - t.stepSize*mi/denom
	}
}

// normBlock is the fixed block size of GradNorm's partial sums: fixed, not
// per thread, so that the sum's rounding does not depend on the thread count.
const normBlock = 8192

// GradNorm returns the L2 norm of the concatenation of grads. Squares are
// summed in float64 per fixed block and the blocks in order, so the result is
// the same for any thread count.
func GradNorm(grads []float32) float32 {
	nb := (len(grads) + normBlock - 1) / normBlock
	if nb == 0 {
		return 0
	}
	bufp := normPartials.Get().(*[]float64)
	if cap(*bufp) < nb {
		*bufp = make([]float64, nb)
	}
	partials := (*bufp)[:nb]
	normTasks.run(nb, 1, normTask{g: grads, partials: partials})
	var sum float64
	for _, s := range partials {
		sum += s
	}
	normPartials.Put(bufp)
	return float32(math.Sqrt(sum))
}

var normPartials = sync.Pool{New: func() any { return new([]float64) }}

type normTask struct {
	g        []float32
	partials []float64
}

var normTasks taskPool[normTask, *normTask]

func (t *normTask) Run(lo, hi int) {
	for b := lo; b < hi; b++ {
		blk := t.g[b*normBlock : min((b+1)*normBlock, len(t.g))]
		var s float64
		for _, x := range blk {
			s += float64(x) * float64(x)
		}
		t.partials[b] = s
	}
}

// ClipGradNorm scales grads in place so that their global L2 norm is at most
// maxNorm, as torch.nn.utils.clip_grad_norm_ does (coefficient
// maxNorm/(norm+1e-6), applied only when below 1), and returns the norm
// before clipping. maxNorm ≤ 0 disables clipping.
func ClipGradNorm(grads []float32, maxNorm float32) float32 {
	norm := GradNorm(grads)
	if maxNorm <= 0 {
		return norm
	}
	coef := maxNorm / (norm + 1e-6)
	if coef < 1 {
		Scale(grads, coef)
	}
	return norm
}

// Scale multiplies x by s in place.
func Scale(x []float32, s float32) {
	scaleTasks.run(len(x), 8192, scaleTask{x: x, s: s})
}

type scaleTask struct {
	x []float32
	s float32
}

var scaleTasks taskPool[scaleTask, *scaleTask]

func (t *scaleTask) Run(lo, hi int) {
	x := t.x[lo:hi]
	for i := range x {
		x[i] *= t.s
	}
}
