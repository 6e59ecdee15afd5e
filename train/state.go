package train

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
)

// StateFile is the training state beside a checkpoint's weights: optimizer
// moments and step.
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
		"step":   strconv.Itoa(t.Opt.Step),
		"steps":  strconv.Itoa(t.Config.Steps),
		"seed":   strconv.FormatUint(t.Config.Seed, 10),
		"batch":  strconv.Itoa(t.Config.Batch),
		"seqlen": strconv.Itoa(t.T),
	})
}

// LoadOptimizerState reads StateFile from dir into opt. The moments must
// match the optimizer's parameter count.
func LoadOptimizerState(dir string, opt *Optimizer) error {
	path := filepath.Join(dir, StateFile)
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return fmt.Errorf("train: training state: %w", err)
	}
	for _, name := range []string{"adamw.m", "adamw.v"} {
		t, ok := f.Tensor(name)
		if !ok {
			return fmt.Errorf("train: training state %s: tensor %s is missing", path, name)
		}
		w, err := t.Float32s()
		if err != nil {
			return fmt.Errorf("train: training state %s: tensor %s: %w", path, name, err)
		}
		if len(w) != len(opt.M) {
			return fmt.Errorf("train: training state %s: tensor %s has %d elements, the model has %d parameters", path, name, len(w), len(opt.M))
		}
		if name == "adamw.m" {
			copy(opt.M, w)
		} else {
			copy(opt.V, w)
		}
	}
	step, err := strconv.Atoi(f.Metadata["step"])
	if err != nil || step < 0 {
		return fmt.Errorf("train: training state %s: bad step %q", path, f.Metadata["step"])
	}
	opt.Step = step
	return nil
}
