package train

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
)

// StateFile is the training state beside a checkpoint's weights: optimizer
// moments, step and the sampler's position, enough to continue a run exactly.
const StateFile = "training_state.safetensors"

// SaveCheckpoint writes the model (model.SaveCheckpoint) and the optimizer
// state (StateFile) into dir, each file atomically.
func (t *Trainer) SaveCheckpoint(dir string, tok model.Tokenizer) error {
	if err := model.SaveCheckpoint(dir, t.Model.Config, tok, t.Model.Params); err != nil {
		return err
	}
	n := len(t.Opt.M)
	return safetensors.WriteFile(filepath.Join(dir, StateFile), []safetensors.Tensor{
		safetensors.F32Tensor("adamw.m", []int{n}, t.Opt.M),
		safetensors.F32Tensor("adamw.v", []int{n}, t.Opt.V),
	}, map[string]string{
		"step":    strconv.Itoa(t.Opt.Step),
		"steps":   strconv.Itoa(t.Config.Steps),
		"seed":    strconv.FormatUint(t.Config.Seed, 10),
		"batch":   strconv.Itoa(t.Config.Batch),
		"seqlen":  strconv.Itoa(t.T),
		"sampler": hex.EncodeToString(t.sampler.State()),
	})
}

// Resume loads the optimizer state and sampler position that SaveCheckpoint
// wrote into dir, so that the next Step continues the run as if it had not
// stopped. The weights are loaded separately (model.LoadCheckpoint). The
// batch shape must match the one the state was saved with.
func (t *Trainer) Resume(dir string) error {
	meta, err := LoadOptimizerState(dir, t.Opt)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, StateFile)
	if meta["batch"] != strconv.Itoa(t.Config.Batch) || meta["seqlen"] != strconv.Itoa(t.T) {
		return fmt.Errorf("train: training state %s was saved with batch %s × %s tokens, this run uses %d × %d", path, meta["batch"], meta["seqlen"], t.Config.Batch, t.T)
	}
	b, err := hex.DecodeString(meta["sampler"])
	if err != nil {
		return fmt.Errorf("train: training state %s: bad sampler position: %v", path, err)
	}
	if err := t.sampler.SetState(b); err != nil {
		return fmt.Errorf("train: training state %s: %w", path, err)
	}
	return nil
}

// LoadOptimizerState reads StateFile from dir into opt and returns the file's
// metadata. The moments must match the optimizer's parameter count.
func LoadOptimizerState(dir string, opt *Optimizer) (map[string]string, error) {
	path := filepath.Join(dir, StateFile)
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("train: training state: %w", err)
	}
	for _, name := range []string{"adamw.m", "adamw.v"} {
		t, ok := f.Tensor(name)
		if !ok {
			return nil, fmt.Errorf("train: training state %s: tensor %s is missing", path, name)
		}
		w, err := t.Float32s()
		if err != nil {
			return nil, fmt.Errorf("train: training state %s: tensor %s: %w", path, name, err)
		}
		if len(w) != len(opt.M) {
			return nil, fmt.Errorf("train: training state %s: tensor %s has %d elements, the model has %d parameters", path, name, len(w), len(opt.M))
		}
		if name == "adamw.m" {
			copy(opt.M, w)
		} else {
			copy(opt.V, w)
		}
	}
	step, err := strconv.Atoi(f.Metadata["step"])
	if err != nil || step < 0 {
		return nil, fmt.Errorf("train: training state %s: bad step %q", path, f.Metadata["step"])
	}
	opt.Step = step
	return f.Metadata, nil
}
