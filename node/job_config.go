package node

import (
	"strings"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/train"
)

// trainConfig is the one mapping from a job's replicated spec to the
// trainer's configuration: SubmitJob validates it before the job is
// committed, and every member's runner builds its worker from it, so a
// setting the trainer refuses is refused at submission, not on every node
// after the job is committed.
func trainConfig(spec coordinator.JobSpec) train.JobConfig {
	cfg := train.DefaultJobConfig()
	cfg.Steps, cfg.GlobalBatch, cfg.MicroBatch = spec.Steps, spec.GlobalBatch, spec.MicroBatch
	cfg.LR, cfg.MinLRFrac, cfg.Warmup, cfg.WeightDecay, cfg.Clip, cfg.Seed = spec.LR, spec.MinLRFrac, spec.Warmup, spec.WeightDecay, spec.Clip, spec.Seed
	cfg.LoRARank, cfg.LoRAAlpha, cfg.LoRADropout, cfg.LoRATargets = spec.LoRARank, spec.LoRAAlpha, spec.LoRADropout, strings.Join(spec.LoRATargets, ",")
	if spec.Beta1 != 0 || spec.Beta2 != 0 || spec.Eps != 0 {
		cfg.Beta1, cfg.Beta2, cfg.Eps = spec.Beta1, spec.Beta2, spec.Eps
	}
	return cfg
}
