package train

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"path/filepath"
	"strconv"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
)

// StateFile is the training state beside a checkpoint's weights: optimizer
// moments, step and the sampler's position, enough to continue a run exactly.
const StateFile = "training_state.safetensors"

// SaveCheckpoint writes the model (model.SaveCheckpoint) and the training
// state (StateFile) into dir, each file atomically. The state records the
// hyper-parameters, a hash of the training tokens and a hash of the weights
// it belongs with, so that Resume can refuse a state that does not match.
//
// When the trainer trains a LoRA adapter, dir gets the adapter in PEFT's
// layout (model.SaveAdapter: adapter_model.safetensors,
// adapter_config.json) instead of the model, and the state holds the
// adapter's moments and also records the adapter's settings and a hash of
// the frozen base weights (base_sha256), so that Resume refuses another
// base. The base itself is not written: it is where the adapter's
// base_model_name_or_path says.
func (t *Trainer) SaveCheckpoint(dir string, tok model.Tokenizer) error {
	if err := t.syncFromDevice(); err != nil {
		return err
	}
	meta := map[string]string{}
	if t.LoRA != nil {
		if err := model.SaveAdapter(dir, t.LoRA); err != nil {
			return err
		}
		lc, err := json.Marshal(loraSettings(t.LoRA.Config))
		if err != nil {
			return err
		}
		meta["lora"], meta["base_sha256"] = string(lc), t.baseHash()
	} else if err := model.SaveCheckpoint(dir, t.Model.Config, tok, t.Model.Params); err != nil {
		return err
	}
	cfg, err := json.Marshal(t.Config)
	if err != nil {
		return err
	}
	n := len(t.Opt.M)
	maps.Copy(meta, map[string]string{
		"step":           strconv.Itoa(t.Opt.Step),
		"config":         string(cfg),
		"seqlen":         strconv.Itoa(t.T),
		"sampler":        hex.EncodeToString(t.sampler.State()),
		"corpus_sha256":  t.corpusHash(),
		"weights_sha256": WeightsHash(t.params),
	})
	return safetensors.WriteFile(filepath.Join(dir, StateFile), []safetensors.Tensor{
		safetensors.F32Tensor("adamw.m", []int{n}, t.Opt.M),
		safetensors.F32Tensor("adamw.v", []int{n}, t.Opt.V),
	}, meta)
}

// loraSettings is what of an adapter's config shapes a training run (not
// where its base lives), in canonical form.
func loraSettings(c model.LoRAConfig) model.LoRAConfig {
	c.BaseModel = ""
	return c
}

// baseHash is BaseWeightsHash of the model, computed once.
func (t *Trainer) baseHash() string {
	if t.baseSum == "" {
		t.baseSum = BaseWeightsHash(t.Model)
	}
	return t.baseSum
}

// WeightsHash is the SHA-256 of the parameters' float32 bits, little-endian.
// Replicas that hold the same weights have the same hash.
func WeightsHash(params []float32) string {
	h := sha256.New()
	hashWeights(h, params)
	return hex.EncodeToString(h.Sum(nil))
}

// BaseWeightsHash is WeightsHash of m's base weights, whether Params or
// held in bf16 (model.Model.HoldBaseBF16: the hash of their float32
// values, the same as of the base loaded in float32), computed without a
// float32 copy of the base.
func BaseWeightsHash(m *model.Model) string {
	h := sha256.New()
	m.VisitBaseWeights(func(piece []float32) { hashWeights(h, piece) })
	return hex.EncodeToString(h.Sum(nil))
}

// hashWeights writes the float32 bits of params, little-endian, into h.
func hashWeights(h io.Writer, params []float32) {
	var buf [4096]byte
	for len(params) > 0 {
		n := min(len(params), len(buf)/4)
		for i, p := range params[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(p))
		}
		h.Write(buf[:4*n])
		params = params[n:]
	}
}

// corpusHash identifies the training tokens, so that a sampler position is
// only reused on the stream it indexes.
func (t *Trainer) corpusHash() string {
	if t.corpusSum == "" {
		h := sha256.New()
		var buf [4096]byte
		toks := t.Corpus.Train
		for len(toks) > 0 {
			n := min(len(toks), len(buf)/2)
			for i, v := range toks[:n] {
				binary.LittleEndian.PutUint16(buf[2*i:], v)
			}
			h.Write(buf[:2*n])
			toks = toks[n:]
		}
		t.corpusSum = hex.EncodeToString(h.Sum(nil))
	}
	return t.corpusSum
}

// Resume loads the optimizer state and sampler position that SaveCheckpoint
// wrote into dir, so that the next Step continues the run exactly as if it
// had not stopped (provided Steps is the saved run's; a larger Steps
// continues on a stretched schedule). Load the weights from dir into the
// model first (for a LoRA run: load the base, then the adapter from dir
// with model.LoadAdapter, attach it, and make the trainer with New).
// Resume refuses a state whose hyper-parameters, sequence length, training
// tokens or weights differ from this run's, or whose step is not below
// Steps; for a LoRA run also one of another adapter shape or base model, or
// of a full run (and the other way round).
func (t *Trainer) Resume(dir string) error {
	path := filepath.Join(dir, StateFile)
	opt := t.Opt.fresh()
	// What was trained (the model or which adapter, on which base) is
	// checked first: it also decides the moments' size.
	meta, err := loadOptimizerState(dir, opt, func(meta map[string]string) error {
		saved, ok := meta["lora"]
		switch {
		case t.LoRA == nil && ok:
			return fmt.Errorf("train: training state %s is of a LoRA adapter run; resume it with its base model and the adapter in %s", path, dir)
		case t.LoRA != nil && !ok:
			return fmt.Errorf("train: training state %s is of a full fine-tuning run, not of a LoRA adapter", path)
		case t.LoRA == nil:
			return nil
		}
		now, _ := json.Marshal(loraSettings(t.LoRA.Config))
		if saved != string(now) {
			return fmt.Errorf("train: training state %s was saved for another adapter:\n  saved: %s\n  now:   %s", path, saved, now)
		}
		if meta["base_sha256"] != t.baseHash() {
			return fmt.Errorf("train: training state %s was saved on other base weights (base_sha256 %.12s…, this base %.12s…); use the base the adapter was trained on", path, meta["base_sha256"], t.baseHash())
		}
		return nil
	})
	if err != nil {
		return err
	}
	var saved Config
	if err := json.Unmarshal([]byte(meta["config"]), &saved); err != nil {
		return fmt.Errorf("train: training state %s: bad config: %v", path, err)
	}
	// Everything that shapes the trajectory must match; how often to
	// evaluate need not, and Steps may grow (the schedule then stretches).
	a, b := saved, t.Config
	a.Steps, a.EvalEvery, a.EvalBatches = 0, 0, 0
	b.Steps, b.EvalEvery, b.EvalBatches = 0, 0, 0
	if a != b {
		return fmt.Errorf("train: training state %s was saved with different settings:\n  saved: %+v\n  now:   %+v", path, a, b)
	}
	t.SavedSteps = saved.Steps
	if meta["seqlen"] != strconv.Itoa(t.T) {
		return fmt.Errorf("train: training state %s was saved with sequences of %s tokens, this run uses %d", path, meta["seqlen"], t.T)
	}
	if meta["corpus_sha256"] != t.corpusHash() {
		return fmt.Errorf("train: training state %s was saved for other training data (its sampler position would not mean anything here); use the same --input files", path)
	}
	if meta["weights_sha256"] != WeightsHash(t.params) {
		file := model.WeightsFile
		if t.LoRA != nil {
			file = model.AdapterWeightsFile
		}
		return fmt.Errorf("train: training state %s does not belong with the weights in %s (a save was interrupted between the two files?)", path, file)
	}
	if opt.Step >= t.Config.Steps {
		return fmt.Errorf("train: the run in %s is already at step %d of %d; raise --steps to continue it", dir, opt.Step, t.Config.Steps)
	}
	pos, err := hex.DecodeString(meta["sampler"])
	if err != nil {
		return fmt.Errorf("train: training state %s: bad sampler position: %v", path, err)
	}
	if err := t.sampler.SetState(pos); err != nil {
		return fmt.Errorf("train: training state %s: %w", path, err)
	}
	t.Opt = opt
	return t.uploadToDevice()
}

// LoadOptimizerState reads StateFile from dir into opt and returns the file's
// metadata. The moments must match the optimizer's parameter count.
func LoadOptimizerState(dir string, opt *Optimizer) (map[string]string, error) {
	return loadOptimizerState(dir, opt, nil)
}

// loadOptimizerState is LoadOptimizerState with a check of the metadata
// that runs before the moments are read (so that its error, not a size
// mismatch, tells what is wrong).
func loadOptimizerState(dir string, opt *Optimizer, check func(meta map[string]string) error) (map[string]string, error) {
	path := filepath.Join(dir, StateFile)
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("train: training state: %w", err)
	}
	if check != nil {
		if err := check(f.Metadata); err != nil {
			return nil, err
		}
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
			return nil, fmt.Errorf("train: training state %s: tensor %s has %d elements, this run trains %d parameters", path, name, len(w), len(opt.M))
		}
		if name == "adamw.m" {
			copy(opt.M, w)
		} else {
			copy(opt.V, w)
		}
	}
	step, err := strconv.Atoi(f.Metadata["step"])
	if err != nil || step < 0 || step > 1<<40 {
		return nil, fmt.Errorf("train: training state %s: bad step %q", path, f.Metadata["step"])
	}
	opt.Step = step
	return f.Metadata, nil
}
