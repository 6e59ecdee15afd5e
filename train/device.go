package train

import (
	"fmt"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/cudamodel"
)

// Forwarder is what evaluation needs of a model: package model's Model on
// the CPU, or package cudamodel's on a GPU.
type Forwarder interface {
	Forward(tokens, targets []int32, B, T int) (float32, error)
}

var (
	_ Forwarder = (*model.Model)(nil)
	_ Forwarder = (*cudamodel.Model)(nil)
)

// NewOnDevice is New for a training step on a GPU: dm, a model of m's
// config on the device, computes, clips, updates and evaluates; m is the
// host copy of the weights (its activations are not used, so it may be
// allocated for a batch of one position), which SaveCheckpoint refreshes
// from the device, together with Opt's moments, before writing. It uploads
// m's weights; Resume uploads what it restores. With a LoRA adapter
// attached to m, the adapter is attached on the device too and trained
// there (without dropout).
func NewOnDevice(cfg Config, m *model.Model, dm *cudamodel.Model, tok model.Tokenizer, corpus *Corpus) (*Trainer, error) {
	if dm.Config != m.Config {
		return nil, fmt.Errorf("train: the device model is a %+v, the host model a %+v", dm.Config, m.Config)
	}
	mb, mt := dm.MaxBatch()
	t, err := newTrainer(cfg, m, tok, corpus, mb, mt)
	if err != nil {
		return nil, err
	}
	if err := mirror(m, dm); err != nil {
		return nil, err
	}
	t.dev = dm
	return t, t.uploadToDevice()
}

// mirror gives the device model the host model's weights and, when one is
// attached, its LoRA adapter (the base is then frozen on both).
func mirror(m *model.Model, dm *cudamodel.Model) error {
	if err := dm.WriteParams(m.Params); err != nil {
		return err
	}
	if a := m.LoRA(); a != nil {
		return dm.AttachLoRA(a)
	}
	return nil
}

// Device returns the GPU model the trainer runs on, or nil.
func (t *Trainer) Device() *cudamodel.Model { return t.dev }

// uploadToDevice writes the host's trained weights (the model's, or the
// adapter's) and moments to the GPU model.
func (t *Trainer) uploadToDevice() error {
	if t.dev == nil {
		return nil
	}
	if err := t.dev.WriteTrainable(t.params); err != nil {
		return err
	}
	return t.dev.WriteMoments(t.Opt.M, t.Opt.V)
}

// deviceStep is Step's gradient on the GPU: forward, backward, norm.
func (t *Trainer) deviceStep() (loss, norm float32, err error) {
	dm, B, T := t.dev, t.Config.Batch, t.T
	if err := dm.ZeroGrad(); err != nil {
		return 0, 0, err
	}
	if loss, err = dm.Forward(t.inputs, t.targets, B, T); err != nil {
		return 0, 0, err
	}
	if err := dm.Backward(1); err != nil {
		return 0, 0, err
	}
	if norm, err = dm.ClipGradNorm(float32(t.Config.Clip)); err != nil {
		return 0, 0, err
	}
	return loss, norm, nil
}

// deviceUpdate applies the next AdamW update on the GPU.
func (t *Trainer) deviceUpdate(lr float32) error {
	if err := t.dev.AdamW(cudamodel.AdamWConfig{Beta1: t.Opt.Beta1, Beta2: t.Opt.Beta2, Eps: t.Opt.Eps, WeightDecay: t.Opt.WeightDecay}, lr, t.Opt.Step+1); err != nil {
		return err
	}
	t.Opt.Step++
	return nil
}

// syncFromDevice brings the GPU's weights and moments into the host copy.
func (t *Trainer) syncFromDevice() error {
	if t.dev == nil {
		return nil
	}
	if err := t.dev.ReadTrainable(t.params); err != nil {
		return err
	}
	return t.dev.ReadMoments(t.Opt.M, t.Opt.V)
}
