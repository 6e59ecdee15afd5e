package train

import (
	"fmt"
	"math"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
)

// Optimizer is AdamW over a flat parameter buffer (a model's, or a LoRA
// adapter's), with weight decay applied only where the layout says
// (Param.Decay: a model's matrices, as in GPT-2; every adapter tensor).
type Optimizer struct {
	Beta1, Beta2, Eps, WeightDecay float32
	// M and V are the first and second moments, in the parameter layout.
	M, V []float32
	// Step counts the updates applied so far.
	Step int

	layout []model.Param
}

// NewOptimizer returns an optimizer with zero moments for a model of config c.
func NewOptimizer(c model.Config, beta1, beta2, eps, weightDecay float32) *Optimizer {
	return NewLayoutOptimizer(c.Layout(), beta1, beta2, eps, weightDecay)
}

// NewLayoutOptimizer returns an optimizer with zero moments for the flat
// buffer that layout describes: model.Config.Layout, or model.LoRA.Layout
// for an adapter. The layout's parameters must tile the buffer in order.
func NewLayoutOptimizer(layout []model.Param, beta1, beta2, eps, weightDecay float32) *Optimizer {
	n := 0
	if k := len(layout); k > 0 {
		n = layout[k-1].Offset + layout[k-1].Size
	}
	return &Optimizer{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: weightDecay,
		M: make([]float32, n), V: make([]float32, n), layout: layout}
}

// fresh returns an optimizer with o's settings and layout and zero moments.
func (o *Optimizer) fresh() *Optimizer {
	return NewLayoutOptimizer(o.layout, o.Beta1, o.Beta2, o.Eps, o.WeightDecay)
}

// Apply performs one update of params with grads at learning rate lr.
func (o *Optimizer) Apply(params, grads []float32, lr float32) {
	if len(params) != len(o.M) || len(grads) != len(o.M) {
		panic(fmt.Sprintf("train: optimizer holds %d moments, got %d params and %d grads", len(o.M), len(params), len(grads)))
	}
	o.Step++
	// Consecutive parameters with the same decay setting are one AdamW call.
	for i := 0; i < len(o.layout); {
		j := i
		for j+1 < len(o.layout) && o.layout[j+1].Decay == o.layout[i].Decay {
			j++
		}
		lo, hi := o.layout[i].Offset, o.layout[j].Offset+o.layout[j].Size
		wd := float32(0)
		if o.layout[i].Decay {
			wd = o.WeightDecay
		}
		kernels.AdamW(params[lo:hi], grads[lo:hi], o.M[lo:hi], o.V[lo:hi], kernels.AdamWParams{
			LR: lr, Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps, WeightDecay: wd, Step: o.Step})
		i = j + 1
	}
}

// Schedule is a linear warmup followed by a cosine decay to MinLR at Steps.
type Schedule struct {
	LR, MinLR     float64
	Warmup, Steps int
}

// At returns the learning rate of the update of index step, which is step
// number step+1 (package doc: step numbers).
func (s Schedule) At(step int) float64 {
	if step < s.Warmup {
		return s.LR * float64(step+1) / float64(s.Warmup)
	}
	if s.Steps <= s.Warmup {
		return s.LR
	}
	frac := float64(step-s.Warmup) / float64(s.Steps-s.Warmup)
	frac = math.Min(frac, 1)
	return s.MinLR + 0.5*(s.LR-s.MinLR)*(1+math.Cos(math.Pi*frac))
}
