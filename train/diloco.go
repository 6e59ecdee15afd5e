package train

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/braidml/braid/model/safetensors"
)

// DiLoCo is the low-communication mode of a data-parallel job (Douillard
// et al., "DiLoCo: Distributed Low-Communication Training of Language
// Models", 2023): every worker takes H local AdamW steps on its own part
// of each global batch without talking to the others (the inner steps),
// then the workers all-reduce the pseudo-gradient — how far the weights
// moved since the last outer step — and every worker applies the same
// outer step, SGD with Nesterov momentum, to the weights of the last outer
// step. The workers' weights are identical right after each outer step and
// drift apart in between; the all-reduce carries one model's worth of
// values every H steps instead of every step, and tolerates bf16 or int8
// on the wire.
//
// The inner optimizer's moments stay local (as in the paper). So that a
// round that breaks (a member dies during it) can be redone, DiLoCo keeps
// the inner optimizer's moments as they were at the last outer step:
// Rollback returns the worker to that state.
type DiLoCo struct {
	W        *Worker
	H        int     // inner steps per outer step
	LR       float64 // outer learning rate (0.7 in the paper)
	Momentum float64 // outer Nesterov momentum (0.9 in the paper)

	// Outer is the number of outer steps applied; Base the weights after
	// the last one; Mom the outer momentum buffer.
	Outer int
	Base  []float32
	Mom   []float32

	delta          []float32 // the pseudo-gradient being reduced
	baseM, baseV   []float32 // inner moments at the last outer step
	baseDone       int       // inner steps applied at the last outer step
	baseInnerSteps int       // the inner optimizer's step count then

	mu      sync.Mutex // guards snap, snapErr
	snap    []byte     // Snapshot of the last boundary
	snapErr error
}

// NewDiLoCo wraps w (whose weights are the starting point) in DiLoCo's
// outer loop. w must train on its part alone (w.LocalBatch).
func NewDiLoCo(w *Worker, h int, lr, momentum float64) (*DiLoCo, error) {
	switch {
	case h < 1:
		return nil, fmt.Errorf("train: DiLoCo with %d inner steps, want ≥ 1", h)
	case !(lr > 0) || lr > 100:
		return nil, fmt.Errorf("train: DiLoCo outer learning rate %v, want in (0, 100]", lr)
	case !(momentum >= 0 && momentum < 1):
		return nil, fmt.Errorf("train: DiLoCo outer momentum %v, want in [0, 1)", momentum)
	case !w.LocalBatch:
		return nil, errors.New("train: DiLoCo needs a worker that trains on its part alone (Worker.LocalBatch)")
	}
	n := len(w.Trainable())
	d := &DiLoCo{W: w, H: h, LR: lr, Momentum: momentum,
		Base: slices.Clone(w.Trainable()), Mom: make([]float32, n), delta: make([]float32, n)}
	d.mark()
	return d, nil
}

// mark records the state of an outer-step boundary (the worker holds it
// now) and its snapshot.
func (d *DiLoCo) mark() {
	d.baseM = append(d.baseM[:0], d.W.Opt.M...)
	d.baseV = append(d.baseV[:0], d.W.Opt.V...)
	d.baseDone, d.baseInnerSteps = d.W.Done, d.W.Opt.Step
	snap, err := d.encodeBoundary()
	d.mu.Lock()
	d.snap, d.snapErr = snap, err
	d.mu.Unlock()
}

// Boundary is the number of inner steps applied at the last outer step.
func (d *DiLoCo) Boundary() int { return d.baseDone }

// Due reports whether H inner steps have run since the last outer step.
func (d *DiLoCo) Due() bool { return d.W.Done-d.baseDone >= d.H }

// localReducer is the reducer of an inner step: nothing to sum with anyone.
type localReducer struct{}

type localOp struct{}

func (localOp) Add([]float32) {}
func (localOp) Wait() error   { return nil }

func (localReducer) Start(context.Context, uint64) ReduceOp             { return localOp{} }
func (localReducer) AllReduce(context.Context, uint64, []float32) error { return nil }

// InnerStep takes one local step on part (the worker's share of global
// batch W.Done), with no communication.
func (d *DiLoCo) InnerStep(ctx context.Context, part []int64) (StepResult, error) {
	return d.W.Step(ctx, part, localReducer{})
}

// OuterStep all-reduces the pseudo-gradient Base − Params over red (summed
// over the workers members, then averaged) and applies the outer Nesterov
// step to Base; every worker ends with the same weights. On a reducer error
// nothing is changed (call Rollback to redo the round).
func (d *DiLoCo) OuterStep(ctx context.Context, red Reducer, members int) error {
	if members < 1 {
		return fmt.Errorf("train: DiLoCo outer step with %d members", members)
	}
	p := d.W.Trainable()
	for i := range d.delta {
		d.delta[i] = d.Base[i] - p[i]
	}
	if err := red.AllReduce(ctx, uint64(d.Outer), d.delta); err != nil {
		return fmt.Errorf("train: DiLoCo outer step %d: %w", d.Outer, err)
	}
	inv := 1 / float32(members)
	lr, mu := float32(d.LR), float32(d.Momentum)
	for i, g := range d.delta {
		g *= inv
		if g != g || math.IsInf(float64(g), 0) {
			return fmt.Errorf("%w: DiLoCo outer step %d: pseudo-gradient element %d is %v", ErrDiverged, d.Outer, i, g)
		}
		d.delta[i] = g
	}
	for i, g := range d.delta {
		m := mu*d.Mom[i] + g
		d.Mom[i] = m
		d.Base[i] -= lr * (g + mu*m) // Nesterov
	}
	copy(p, d.Base)
	if err := d.W.PushTrainable(); err != nil {
		return fmt.Errorf("train: DiLoCo outer step %d: %w", d.Outer, err)
	}
	d.Outer++
	d.mark()
	return nil
}

// Rollback returns the worker to the last outer step: weights, inner
// moments and step counts, so that a broken round is redone.
func (d *DiLoCo) Rollback() {
	copy(d.W.Trainable(), d.Base)
	copy(d.W.Opt.M, d.baseM)
	copy(d.W.Opt.V, d.baseV)
	d.W.Done, d.W.Opt.Step = d.baseDone, d.baseInnerSteps
	d.W.PushTrainable() // a GPU worker that cannot take it fails its next step
}

// WeightsHash is the hash of the weights of the last outer step: what every
// worker agrees on.
func (d *DiLoCo) WeightsHash() string { return WeightsHash(d.Base) }

// Snapshot returns the state of the last outer step as one safetensors
// file: the worker's snapshot then (weights, inner moments, step) and the
// outer momentum. It is safe to call while the worker takes inner steps on
// another goroutine: it returns bytes made at the boundary.
func (d *DiLoCo) Snapshot() ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.snap, d.snapErr
}

// encodeBoundary makes the snapshot of the boundary just marked.
func (d *DiLoCo) encodeBoundary() ([]byte, error) {
	inner, err := d.W.Snapshot()
	if err != nil {
		return nil, err
	}
	var hdr [16]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(d.Outer))
	binary.LittleEndian.PutUint64(hdr[8:], uint64(len(inner)))
	var buf bytes.Buffer
	err = safetensors.Encode(&buf, []safetensors.Tensor{
		safetensors.F32Tensor("outer.mom", []int{len(d.Mom)}, d.Mom),
		{Name: "outer.header", Dtype: safetensors.U8, Shape: []int{16}, Data: hdr[:]},
		{Name: "inner", Dtype: safetensors.U8, Shape: []int{len(inner)}, Data: inner},
	}, map[string]string{"format": "braid-diloco", "version": "1"})
	return buf.Bytes(), err
}

// Restore loads a Snapshot: the worker's state at the peer's last outer
// step and the outer momentum.
func (d *DiLoCo) Restore(b []byte) error {
	f, err := safetensors.Decode(b)
	if err != nil {
		return fmt.Errorf("%w: DiLoCo: %v", ErrSnapshot, err)
	}
	if f.Metadata["format"] != "braid-diloco" || f.Metadata["version"] != "1" {
		return fmt.Errorf("%w: DiLoCo: not a DiLoCo snapshot", ErrSnapshot)
	}
	hdr, ok1 := f.Tensor("outer.header")
	inner, ok2 := f.Tensor("inner")
	mom, ok3 := f.Tensor("outer.mom")
	if !ok1 || !ok2 || !ok3 || len(f.Tensors) != 3 {
		return fmt.Errorf("%w: DiLoCo: want the tensors outer.header, inner and outer.mom", ErrSnapshot)
	}
	if hdr.Dtype != safetensors.U8 || len(hdr.Data) != 16 || inner.Dtype != safetensors.U8 ||
		mom.Dtype != safetensors.F32 || len(mom.Data) != 4*len(d.Mom) {
		return fmt.Errorf("%w: DiLoCo: tensors of the wrong type or size", ErrSnapshot)
	}
	outer := binary.LittleEndian.Uint64(hdr.Data)
	if outer > 1<<40 || binary.LittleEndian.Uint64(hdr.Data[8:]) != uint64(len(inner.Data)) {
		return fmt.Errorf("%w: DiLoCo: bad header", ErrSnapshot)
	}
	momv := make([]float32, len(d.Mom))
	for i := range momv {
		x := math.Float32frombits(binary.LittleEndian.Uint32(mom.Data[4*i:]))
		if x != x || math.IsInf(float64(x), 0) {
			return fmt.Errorf("%w: DiLoCo: momentum element %d is %v", ErrSnapshot, i, x)
		}
		momv[i] = x
	}
	if err := d.W.Restore(inner.Data); err != nil {
		return err
	}
	copy(d.Mom, momv)
	copy(d.Base, d.W.Trainable())
	d.Outer = int(outer)
	d.mark()
	return nil
}
