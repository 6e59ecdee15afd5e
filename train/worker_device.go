package train

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/cudamodel"
	"github.com/braidml/braid/shard"
)

// A worker on a GPU (NewWorkerOnDevice) keeps the weights, the gradient,
// AdamW's moments and the activations on the device. Step runs forward and
// backward there; during the last backward each gradient range is copied,
// on the device's copy stream, into pinned host memory as soon as its last
// kernel is queued, and a goroutine hands each bucket to the reducer when
// its copies have landed, so that the ring runs while the layers below are
// computed. The reduced gradient goes back to the device for clipping and
// AdamW. The host copies of the weights and moments (Model.Params, Opt) are
// refreshed only when something reads them: WeightsHash, Snapshot,
// Trainable, Weights.
type deviceWorker struct {
	// mu orders refreshing the host copy (syncHost, which a node's control
	// handler may call to serve a snapshot while the worker waits in the
	// all-reduce) with the update that makes it stale.
	mu     sync.Mutex
	dm     *cudamodel.Model
	pinned *cuda.HostBuffer // the gradient on the host: Worker.grads
	events [][2]cuda.Event  // per gradient range: compute done, copy done
	copied chan int         // ranges whose copy is queued, in order, for the adder
	stale  bool             // the device's weights and moments are newer than the host's
}

// NewWorkerOnDevice is NewWorker for a worker that trains on a GPU: dm is
// a model of m's config on the device whose activations fit MicroBatch
// sequences of the dataset's seq_len; m is the host copy of the starting
// weights (model.NewInference(c, 1, 1) will do: its activations are not
// used). In LoRA mode the adapter NewWorker makes is trained on the device
// (without dropout: a job with LoRA dropout trains on the CPU).
func NewWorkerOnDevice(cfg JobConfig, m *model.Model, dm *cudamodel.Model, data *shard.Dataset) (*Worker, error) {
	if m == nil || dm == nil || dm.Config != m.Config {
		return nil, fmt.Errorf("train: NewWorkerOnDevice needs a host model and a device model of the same config")
	}
	mb, mt := dm.MaxBatch()
	w, err := newWorker(cfg, m, data, mb, mt, true)
	if err != nil {
		return nil, err
	}
	if err := mirror(m, dm); err != nil {
		return nil, err
	}
	dev := dm.Device()
	unlock := dev.Lock()
	pinned, err := dev.AllocHostF32(dm.NumTrainable(), "the gradient")
	unlock()
	if err != nil {
		return nil, err
	}
	d := &deviceWorker{dm: dm, pinned: pinned}
	w.dev, w.grads = d, pinned.F32
	w.ranges = dm.GradRanges()
	w.reduced = make([]float32, len(w.grads))
	w.makeBuckets()
	unlock = dev.Lock()
	for range w.ranges {
		b, err1 := dev.NewEvent()
		e, err2 := dev.NewEvent()
		d.events = append(d.events, [2]cuda.Event{b, e}) // Close destroys them (a zero Event is skipped)
		if err := errors.Join(err1, err2); err != nil {
			unlock()
			w.Close()
			return nil, fmt.Errorf("train: events for the gradient copies: %w", err)
		}
	}
	unlock()
	if err := w.pushHost(); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// Close releases what a GPU worker holds on the host (pinned memory,
// events); the device model itself is the caller's. A CPU worker has
// nothing to release.
func (w *Worker) Close() {
	d := w.dev
	if d == nil {
		return
	}
	dev := d.dm.Device()
	unlock := dev.Lock()
	defer unlock()
	dev.Sync()
	for _, e := range d.events {
		dev.DestroyEvent(e[0])
		dev.DestroyEvent(e[1])
	}
	d.events = nil
	w.grads = nil
	dev.FreeHost(d.pinned)
}

// OnDevice says whether the worker trains on a GPU.
func (w *Worker) OnDevice() bool { return w.dev != nil }

// Weights returns the full model's weights on the host (Model.Params),
// brought up to date from the GPU first for a GPU worker.
func (w *Worker) Weights() ([]float32, error) {
	if err := w.syncHost(); err != nil {
		return nil, err
	}
	return w.Model.Params, nil
}

// syncHost brings the device's weights and moments into the host copies
// when they are newer.
func (w *Worker) syncHost() error {
	d := w.dev
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.stale {
		return nil
	}
	if err := d.dm.ReadTrainable(w.params); err != nil {
		return err
	}
	if err := d.dm.ReadMoments(w.Opt.M, w.Opt.V); err != nil {
		return err
	}
	d.stale = false
	return nil
}

// hostCurrent marks a GPU worker's host copy as the current state (before
// the host overwrites it, for pushHost to send to the device), so that a
// concurrent syncHost leaves it alone.
func (w *Worker) hostCurrent() {
	if d := w.dev; d != nil {
		d.mu.Lock()
		d.stale = false
		d.mu.Unlock()
	}
}

// pushHost writes the host weights and moments to the device (after
// Restore, or after DiLoCo changed the weights on the host).
func (w *Worker) pushHost() error {
	d := w.dev
	if d == nil {
		return nil
	}
	if err := d.dm.WriteTrainable(w.params); err != nil {
		return err
	}
	if err := d.dm.WriteMoments(w.Opt.M, w.Opt.V); err != nil {
		return err
	}
	d.mu.Lock()
	d.stale = false
	d.mu.Unlock()
	return nil
}

// The training pass, on whichever side the model is.

func (w *Worker) zeroGrad() error {
	if w.dev != nil {
		return w.dev.dm.ZeroGrad()
	}
	w.Model.ZeroGrad()
	return nil
}

func (w *Worker) forward(B int) (float32, error) {
	T := w.T
	if w.dev != nil {
		return w.dev.dm.Forward(w.tokens[:B*T], w.targets[:B*T], B, T)
	}
	return w.Model.Forward(w.tokens[:B*T], w.targets[:B*T], B, T)
}

// backward runs a micro-batch's backward pass; with last set it reports
// the finished gradient ranges to w.gradReady (on the CPU, from inside the
// pass; on a GPU, from a goroutine, once each range's copy to the host has
// landed) and returns when every range has been reported.
func (w *Worker) backward(scale float32, last bool) error {
	if w.dev == nil {
		if last {
			w.Model.GradReady = w.ready
		}
		err := w.Model.Backward(scale)
		w.Model.GradReady = nil
		return err
	}
	d := w.dev
	if !last {
		return d.dm.Backward(scale)
	}
	d.copied = make(chan int, len(w.ranges))
	adderDone := make(chan error, 1)
	go func() {
		dev := d.dm.Device()
		unlock := dev.Lock()
		defer unlock()
		var err error
		for i := range d.copied {
			if err == nil {
				err = dev.WaitEvent(d.events[i][1])
			}
			if err == nil {
				r := w.ranges[i]
				w.gradReady(r[0], r[1])
			}
		}
		adderDone <- err
	}()
	next := 0
	var copyErr error
	dev := d.dm.Device()
	d.dm.GradReady = func(lo, hi int) {
		if copyErr != nil {
			return
		}
		copyErr = dev.CopyToHostAfter(w.grads[lo:hi], d.dm.Grads().Off(4*int64(lo)), hi-lo, d.events[next][0], d.events[next][1])
		if copyErr == nil {
			d.copied <- next
			next++
		}
	}
	err := d.dm.Backward(scale)
	d.dm.GradReady = nil
	close(d.copied)
	if aerr := <-adderDone; err == nil {
		err = aerr
	}
	if err == nil {
		err = copyErr
	}
	return err
}

// applyOnDevice is apply's update on the GPU: the reduced gradient (in
// w.grads) goes to the device, which clips it and applies AdamW.
func (w *Worker) applyOnDevice(step int) (norm float32, lr float64, err error) {
	d := w.dev
	if err := d.dm.WriteGrads(w.grads); err != nil {
		return 0, 0, fmt.Errorf("train: step %d: %w", step, err)
	}
	if norm, err = d.dm.ClipGradNorm(float32(w.Config.Clip)); err != nil {
		return 0, 0, fmt.Errorf("train: step %d: %w", step, err)
	}
	if math.IsNaN(float64(norm)) || math.IsInf(float64(norm), 0) {
		return 0, 0, fmt.Errorf("%w: step %d: gradient norm %v; lower the learning rate", ErrDiverged, step, norm)
	}
	lr = w.sched.At(step)
	adam := cudamodel.AdamWConfig{Beta1: w.Opt.Beta1, Beta2: w.Opt.Beta2, Eps: w.Opt.Eps, WeightDecay: w.Opt.WeightDecay}
	if err := d.dm.AdamW(adam, float32(lr), w.Opt.Step+1); err != nil {
		return 0, 0, fmt.Errorf("train: step %d: %w", step, err)
	}
	d.mu.Lock()
	w.Opt.Step++
	d.stale = true
	d.mu.Unlock()
	return norm, lr, nil
}
