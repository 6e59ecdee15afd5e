package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"

	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/model/safetensors"
)

// Adapter file names inside an adapter directory, as PEFT's
// save_pretrained names them.
const (
	AdapterWeightsFile = "adapter_model.safetensors"
	AdapterConfigFile  = "adapter_config.json"
)

// maxAdapterConfigBytes bounds adapter_config.json; real ones are under 2 kB.
const maxAdapterConfigBytes = 1 << 20

// peftConfigOut is adapter_config.json as braid writes it: the keys of
// PEFT's LoraConfig (PEFT 0.10 and later read it; newer versions add keys
// with defaults), sorted as save_pretrained sorts them. Keys braid does not
// model carry LoraConfig's defaults.
type peftConfigOut struct {
	AlphaPattern      map[string]float64 `json:"alpha_pattern"`
	AutoMapping       *string            `json:"auto_mapping"`
	BaseModel         *string            `json:"base_model_name_or_path"`
	Bias              string             `json:"bias"`
	FanInFanOut       bool               `json:"fan_in_fan_out"`
	InferenceMode     bool               `json:"inference_mode"`
	InitLoraWeights   bool               `json:"init_lora_weights"`
	LayerReplication  *string            `json:"layer_replication"`
	LayersPattern     *string            `json:"layers_pattern"`
	LayersToTransform *string            `json:"layers_to_transform"`
	LoftqConfig       map[string]string  `json:"loftq_config"`
	LoraAlpha         float64            `json:"lora_alpha"`
	LoraDropout       float64            `json:"lora_dropout"`
	MegatronConfig    *string            `json:"megatron_config"`
	MegatronCore      string             `json:"megatron_core"`
	ModulesToSave     *string            `json:"modules_to_save"`
	PeftType          string             `json:"peft_type"`
	R                 int                `json:"r"`
	RankPattern       map[string]int     `json:"rank_pattern"`
	Revision          *string            `json:"revision"`
	TargetModules     []string           `json:"target_modules"`
	TaskType          string             `json:"task_type"`
	UseDora           bool               `json:"use_dora"`
	UseRslora         bool               `json:"use_rslora"`
}

// peftConfigIn is what LoadAdapter reads from adapter_config.json: the keys
// that decide what the adapter computes. Unknown keys are ignored (PEFT
// adds keys over time); keys that would make PEFT compute something braid
// does not are checked (see DecodeAdapter).
type peftConfigIn struct {
	PeftType      string          `json:"peft_type"`
	TaskType      *string         `json:"task_type"`
	R             int             `json:"r"`
	LoraAlpha     *float64        `json:"lora_alpha"`
	LoraDropout   float64         `json:"lora_dropout"`
	TargetModules json.RawMessage `json:"target_modules"`
	FanInFanOut   *bool           `json:"fan_in_fan_out"`
	Bias          *string         `json:"bias"`
	BaseModel     *string         `json:"base_model_name_or_path"`
	UseDora       bool            `json:"use_dora"`
	UseRslora     bool            `json:"use_rslora"`
	LoraBias      bool            `json:"lora_bias"`
	InitWeights   json.RawMessage `json:"init_lora_weights"`
	// Must be null, absent or empty:
	ModulesToSave         json.RawMessage            `json:"modules_to_save"`
	LayersToTransform     json.RawMessage            `json:"layers_to_transform"`
	LayerReplication      json.RawMessage            `json:"layer_replication"`
	ExcludeModules        json.RawMessage            `json:"exclude_modules"`
	TrainableTokenIndices json.RawMessage            `json:"trainable_token_indices"`
	TargetParameters      json.RawMessage            `json:"target_parameters"`
	RankPattern           map[string]json.RawMessage `json:"rank_pattern"`
	AlphaPattern          map[string]json.RawMessage `json:"alpha_pattern"`
}

// SaveAdapter writes adapter a into dir (created if needed) in PEFT's
// layout, as PeftModel.save_pretrained does for a GPT-2 (or a model of the
// Llama family) with a LoRA adapter:
//
//   - adapter_model.safetensors: one F32 tensor per Layout entry, named
//     "base_model.model.transformer.h.{l}.{attn.c_attn|attn.c_proj|mlp.c_fc|mlp.c_proj}.lora_{A|B}.weight"
//     (Llama: "base_model.model.model.layers.{l}.{self_attn.q_proj|...|mlp.down_proj}.lora_{A|B}.weight"),
//     lora_A (r, in_features), lora_B (out_features, r), metadata
//     {"format": "pt"};
//   - adapter_config.json: peft_type LORA, task_type CAUSAL_LM, r,
//     lora_alpha, lora_dropout, target_modules, fan_in_fan_out true for
//     GPT-2's Conv1D (false for the Llama family's nn.Linear), bias none,
//     base_model_name_or_path (Config.BaseModel, null if empty), and
//     LoraConfig's defaults for the rest.
//
// PeftModel.from_pretrained(GPT2LMHeadModel or LlamaForCausalLM, dir)
// loads it. Each file is
// replaced atomically (temp file, fsync, rename).
func SaveAdapter(dir string, a *LoRA) error {
	cfg, weights, err := EncodeAdapter(a)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("model: adapter directory: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, AdapterWeightsFile), weights, 0o644); err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, AdapterConfigFile), cfg, 0o644)
}

// EncodeAdapter returns the bytes SaveAdapter writes: adapter_config.json
// and adapter_model.safetensors. DecodeAdapter reverses it.
func EncodeAdapter(a *LoRA) (configJSON, weights []byte, err error) {
	tensors := make([]safetensors.Tensor, 0, len(a.layout))
	for _, p := range a.layout {
		tensors = append(tensors, safetensors.F32Tensor(p.Name, p.Shape, a.Params[p.Offset:p.Offset+p.Size]))
	}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, tensors, map[string]string{"format": "pt"}); err != nil {
		return nil, nil, err
	}
	cfg, err := encodeAdapterConfig(a.Config, a.Base)
	if err != nil {
		return nil, nil, err
	}
	return cfg, buf.Bytes(), nil
}

// encodeAdapterConfig returns adapter_config.json for c on a model of
// config base.
func encodeAdapterConfig(c LoRAConfig, base Config) ([]byte, error) {
	ts, err := resolveTargets(c.Targets)
	if err != nil {
		return nil, err
	}
	out := peftConfigOut{
		AlphaPattern: map[string]float64{}, Bias: "none", FanInFanOut: !base.llamaFamily(), InferenceMode: true,
		InitLoraWeights: true, LoftqConfig: map[string]string{}, LoraAlpha: c.Alpha, LoraDropout: c.Dropout,
		MegatronCore: "megatron.core", PeftType: "LORA", R: c.Rank, RankPattern: map[string]int{},
		TargetModules: ts.names(), TaskType: "CAUSAL_LM",
	}
	if c.BaseModel != "" {
		out.BaseModel = &c.BaseModel
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// LoadAdapter reads an adapter directory written by SaveAdapter or by PEFT
// (adapter_config.json + adapter_model.safetensors of a LoRA adapter of a
// GPT-2) for a base model of config base. See DecodeAdapter for what is
// checked. The adapter is not attached.
func LoadAdapter(dir string, base Config) (*LoRA, error) {
	cfg, err := safefile.ReadFile(filepath.Join(dir, AdapterConfigFile), maxAdapterConfigBytes)
	if err != nil {
		return nil, fmt.Errorf("model: adapter config: %w", err)
	}
	w, err := safefile.ReadFile(filepath.Join(dir, AdapterWeightsFile), MaxWeightsBytes)
	if err != nil {
		return nil, fmt.Errorf("model: adapter weights: %w", err)
	}
	a, err := DecodeAdapter(cfg, w, base)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return a, nil
}

// ReadAdapterConfig reads dir/adapter_config.json alone (checked as
// DecodeAdapter checks it), for instance to find base_model_name_or_path
// before loading the base.
func ReadAdapterConfig(dir string) (LoRAConfig, error) {
	path := filepath.Join(dir, AdapterConfigFile)
	b, err := safefile.ReadFile(path, maxAdapterConfigBytes)
	if err != nil {
		return LoRAConfig{}, fmt.Errorf("model: adapter config: %w", err)
	}
	c, err := decodeAdapterConfig(b)
	if err != nil {
		return LoRAConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// decodeAdapterConfig parses and checks adapter_config.json.
func decodeAdapterConfig(b []byte) (LoRAConfig, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: "+format, append([]any{ErrAdapter, AdapterConfigFile}, args...)...)
	}
	if len(b) > maxAdapterConfigBytes {
		return LoRAConfig{}, bad("%d bytes, more than %d", len(b), maxAdapterConfigBytes)
	}
	var in peftConfigIn
	if err := json.Unmarshal(b, &in); err != nil {
		return LoRAConfig{}, bad("not a JSON config: %v", err)
	}
	null := func(raw json.RawMessage) bool {
		t := bytes.TrimSpace(raw)
		return len(t) == 0 || string(t) == "null" || string(t) == "[]" || string(t) == "{}"
	}
	switch {
	case in.PeftType != "LORA":
		return LoRAConfig{}, bad("peft_type %q, braid reads LORA adapters", in.PeftType)
	case in.TaskType != nil && *in.TaskType != "CAUSAL_LM":
		return LoRAConfig{}, bad("task_type %q, braid reads CAUSAL_LM adapters (a language model head)", *in.TaskType)
	case in.LoraAlpha == nil:
		return LoRAConfig{}, bad("lora_alpha is missing")
	case in.Bias != nil && *in.Bias != "none":
		return LoRAConfig{}, bad("bias %q: adapters that train biases are not supported (want none)", *in.Bias)
	case in.UseDora:
		return LoRAConfig{}, bad("use_dora = true: DoRA is not supported")
	case in.UseRslora:
		return LoRAConfig{}, bad("use_rslora = true: rank-stabilised scaling is not supported")
	case in.LoraBias:
		return LoRAConfig{}, bad("lora_bias = true is not supported")
	case !null(in.ModulesToSave):
		return LoRAConfig{}, bad("modules_to_save is set: adapters with fully trained modules are not supported")
	case !null(in.LayersToTransform):
		return LoRAConfig{}, bad("layers_to_transform is set: braid adapts every layer")
	case !null(in.LayerReplication):
		return LoRAConfig{}, bad("layer_replication is set: not supported")
	case !null(in.ExcludeModules):
		return LoRAConfig{}, bad("exclude_modules is set: not supported")
	case !null(in.TrainableTokenIndices):
		return LoRAConfig{}, bad("trainable_token_indices is set: not supported")
	case !null(in.TargetParameters):
		return LoRAConfig{}, bad("target_parameters is set: not supported")
	case len(in.RankPattern) > 0:
		return LoRAConfig{}, bad("rank_pattern is set: braid uses one rank for every module")
	case len(in.AlphaPattern) > 0:
		return LoRAConfig{}, bad("alpha_pattern is set: braid uses one alpha for every module")
	}
	// init_lora_weights only matters at initialisation, except for the
	// methods that also rewrite the base weights (PiSSA, OLoRA, ...): an
	// adapter saved from those does not apply to the original base.
	if iw := bytes.TrimSpace(in.InitWeights); len(iw) > 0 {
		switch string(iw) {
		case "true", "false", `"gaussian"`, "null":
		default:
			return LoRAConfig{}, bad("init_lora_weights %s: adapters initialised by rewriting the base weights are not supported", iw)
		}
	}
	targets, err := decodeTargets(in.TargetModules)
	if err != nil {
		return LoRAConfig{}, bad("%v", err)
	}
	c := LoRAConfig{Rank: in.R, Alpha: *in.LoraAlpha, Dropout: in.LoraDropout, Targets: targets}
	if in.BaseModel != nil {
		c.BaseModel = *in.BaseModel
	}
	if err := c.Validate(); err != nil {
		return LoRAConfig{}, bad("%v", err)
	}
	ts, _ := resolveTargets(c.Targets)
	c.Targets = ts.names()
	return c, nil
}

// decodeTargets reads target_modules: a list of module names, or PEFT's
// other form, one regular expression that must match a module's whole
// name ("transformer.h.0.attn.c_attn", "model.layers.0.self_attn.q_proj").
// A regular expression must select the same projections in every block.
func decodeTargets(raw json.RawMessage) ([]string, error) {
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil && list != nil {
		return list, nil
	}
	var expr string
	if err := json.Unmarshal(raw, &expr); err != nil {
		return nil, fmt.Errorf("target_modules is neither a list of module names nor a regular expression")
	}
	return targetsFromRegexp(expr)
}

// ---- Decoding ----

// DecodeAdapter decodes an adapter from the bytes of adapter_config.json
// and adapter_model.safetensors, for a base model of config base. It checks
// everything before it allocates the adapter:
//
//   - the config: peft_type LORA, task_type CAUSAL_LM (or null), r in
//     1..MaxLoRARank, a finite non-zero lora_alpha, lora_dropout in [0, 1),
//     target_modules naming only projections of the base's architecture
//     (the same in every block), bias none, and none of the PEFT options
//     that would make the adapter compute something else (DoRA, rsLoRA,
//     rank or alpha patterns, modules_to_save, layers_to_transform, ...);
//   - the weights: a well-formed safetensors file holding exactly the
//     tensors the config implies for this base, with PEFT's names
//     ("base_model.model.transformer.h.{l}.attn.c_attn.lora_A.weight",
//     "base_model.model.model.layers.{l}.self_attn.q_proj.lora_A.weight"), of
//     a float dtype (F32, F16, BF16, F64: read as float32), of the shapes
//     lora_A (r, in_features) and lora_B (out_features, r), every value
//     finite.
//
// Any problem is an error wrapping ErrAdapter that names the file and the
// tensor or key; it never panics. fan_in_fan_out may be either value: for
// GPT-2's Conv1D, PEFT computes the same thing with both, and for the
// Llama family's nn.Linear it sets it false (with a warning) when true.
func DecodeAdapter(configJSON, weights []byte, base Config) (*LoRA, error) {
	if err := base.Validate(); err != nil {
		return nil, err
	}
	c, err := decodeAdapterConfig(configJSON)
	if err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: "+format, append([]any{ErrAdapter, AdapterWeightsFile}, args...)...)
	}
	f, err := safetensors.Decode(weights)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrAdapter, AdapterWeightsFile, err)
	}
	ts, _ := resolveTargets(c.Targets)
	if err := ts.fits(base); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrAdapter, AdapterConfigFile, err)
	}
	layout := loraLayout(base, c.Rank, ts)
	index := make(map[string]int, len(layout))
	for i, p := range layout {
		index[p.Name] = i
	}
	found := make([]*safetensors.Tensor, len(layout))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		k, ok := index[t.Name]
		if !ok {
			pattern := loraNamePrefix + "h.{layer}.{module}"
			if base.llamaFamily() {
				pattern = loraLlamaNamePrefix + "layers.{layer}.{module}"
			}
			return nil, bad("unexpected tensor %s: not a lora_A or lora_B of the %v projections of a %d-layer %s (names are %s.lora_{A,B}.weight)",
				t.Name, c.Targets, base.Layers, base.Arch, pattern)
		}
		found[k] = t // safetensors.Decode refuses duplicate names
	}
	for i, p := range layout {
		t := found[i]
		switch {
		case t == nil:
			return nil, bad("tensor %s is missing", p.Name)
		case !isFloat(t.Dtype):
			return nil, bad("tensor %s has dtype %s, want F32, F16, BF16 or F64", p.Name, t.Dtype)
		case !equalShape(t.Shape, p.Shape):
			return nil, bad("tensor %s has shape %v, r = %d and the base model imply %v", p.Name, t.Shape, c.Rank, p.Shape)
		}
	}
	a, err := NewLoRA(base, c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAdapter, err)
	}
	for i, p := range a.layout {
		w, err := found[i].Float32s()
		if err != nil {
			return nil, bad("tensor %s: %v", p.Name, err)
		}
		for j, v := range w {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, bad("tensor %s: element %d is %v", p.Name, j, v)
			}
		}
		copy(a.Params[p.Offset:p.Offset+p.Size], w)
	}
	return a, nil
}

// targetsFromRegexp turns PEFT's regular-expression form of target_modules
// into module names: the projections whose full module name in every block
// the expression matches ("transformer.h.{l}.attn.c_attn" for GPT-2,
// "model.layers.{l}.self_attn.q_proj" for the Llama family). It refuses an
// expression that matches a projection in some blocks only, or none, or
// projections of both architectures.
func targetsFromRegexp(expr string) ([]string, error) {
	re, err := compileFullMatch(expr)
	if err != nil {
		return nil, fmt.Errorf("target_modules %q: %v", expr, err)
	}
	// Whether a projection is matched in a block does not depend on the
	// block beyond its index's digits; check the first 64 indices.
	var names []string
	for p, full := range projNames {
		module := "transformer.h.%d.%s"
		if projection(p).llama() {
			module = "model.layers.%d.%s"
		}
		hits := 0
		const blocks = 64
		for l := range blocks {
			if re.MatchString(fmt.Sprintf(module, l, full)) {
				hits++
			}
		}
		switch hits {
		case 0:
		case blocks:
			names = append(names, full)
		default:
			return nil, fmt.Errorf("target_modules %q adapts %s in some blocks only: braid adapts every block alike", expr, full)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("target_modules %q matches no projection braid adapts (transformer.h.N.attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj; model.layers.N.self_attn.q_proj, k_proj, v_proj, o_proj, mlp.gate_proj, up_proj, down_proj)", expr)
	}
	if _, err := resolveTargets(names); err != nil {
		return nil, fmt.Errorf("target_modules %q matches projections of both GPT-2 and the Llama family", expr)
	}
	return names, nil
}

// compileFullMatch compiles expr to match whole strings, as Python's
// re.fullmatch does (RE2 syntax: no look-arounds or back-references).
func compileFullMatch(expr string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + expr + `)$`)
}
