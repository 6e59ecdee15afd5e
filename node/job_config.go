package node

import (
	"fmt"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/train"
)

// A job's settings take three shapes, each mapped from the one before in
// this file only:
//
//	JobRequest              what a client asks for (the API's JSON; zero: the default)
//	  → coordinator.JobSpec what the cluster commits: every setting that decides
//	                        the trajectory, with this node's defaults filled in,
//	                        so that members with other defaults train alike
//	  → train.JobConfig     what each member's worker is built from
//
// SubmitJob maps a request to its spec and validates the spec's trainer
// configuration before committing it, so a setting the trainer refuses is
// refused at submission, not on every member after the job is committed;
// every member's runner builds its worker with trainConfig.

// jobSpec maps req to the spec to commit, for the dataset (ID) SubmitJob
// resolved and, in a federated job, the units' datasets (IDs). The base
// model is req.Base, of shape base (a LoRA job adapts every projection of
// its family unless the request names some).
func jobSpec(req JobRequest, base model.Config, dataset string, federated []string) (coordinator.JobSpec, error) {
	def := train.DefaultJobConfig()
	if req.LoRARank > 0 {
		def = train.DefaultLoRAJobConfig()
		lc := model.DefaultLoRAConfig()
		lc.Targets = model.DefaultLoRATargetsFor(base)
		lc.Rank, lc.Alpha, lc.Dropout = req.LoRARank, orF(req.LoRAAlpha, float64(2*req.LoRARank)), req.LoRADropout
		if len(req.LoRATargets) > 0 {
			lc.Targets = req.LoRATargets
		}
		if err := lc.Validate(); err != nil {
			return coordinator.JobSpec{}, err
		}
		if lc.Dropout > 0 && req.Device == coordinator.DeviceCUDA {
			return coordinator.JobSpec{}, fmt.Errorf("LoRA dropout (%g) is not available on GPUs yet: submit with --lora-dropout 0, or --device cpu", lc.Dropout)
		}
		req.LoRATargets = lc.Targets
	}
	spec := coordinator.JobSpec{
		Base: req.Base, Dataset: dataset, Federated: req.Federated, Datasets: federated,
		Steps: req.Steps, GlobalBatch: req.GlobalBatch, MicroBatch: or(req.MicroBatch, min(def.MicroBatch, max(req.GlobalBatch, 1))),
		LR: orF(req.LR, def.LR), MinLRFrac: def.MinLRFrac, Warmup: or(req.Warmup, def.Warmup),
		WeightDecay: orF(req.WeightDecay, def.WeightDecay), Clip: orF(req.Clip, def.Clip), Seed: req.Seed,
		Beta1: def.Beta1, Beta2: def.Beta2, Eps: def.Eps, BucketBytes: train.DefaultBucketBytes,
		CheckpointEvery: req.CheckpointEvery, EvalEvery: req.EvalEvery,
		HashEvery: or(req.HashEvery, DefaultHashEvery), Replicas: or(req.Replicas, DefaultReplicas), KeepCheckpoints: req.KeepCheckpoints,
		Wire: req.Wire, Device: coordinator.JobSpec{Device: req.Device}.DeviceKind(),
		InnerSteps: req.InnerSteps, OuterLR: req.OuterLR, OuterMomentum: req.OuterMomentum,
		LoRARank: req.LoRARank, LoRAAlpha: req.LoRAAlpha, LoRADropout: req.LoRADropout, LoRATargets: req.LoRATargets,
	}
	if spec.Warmup >= spec.Steps {
		spec.Warmup = spec.Steps / 10
	}
	return spec, nil
}

// trainConfig maps a committed spec to the trainer's configuration. Specs
// committed before AdamW's betas and eps, or the bucket size, were in the
// spec (all zero) get this binary's defaults.
func trainConfig(spec coordinator.JobSpec) train.JobConfig {
	def := train.DefaultJobConfig()
	cfg := train.JobConfig{
		Steps: spec.Steps, GlobalBatch: spec.GlobalBatch, MicroBatch: spec.MicroBatch,
		LR: spec.LR, MinLRFrac: spec.MinLRFrac, Warmup: spec.Warmup, WeightDecay: spec.WeightDecay, Clip: spec.Clip,
		Beta1: def.Beta1, Beta2: def.Beta2, Eps: def.Eps, Seed: spec.Seed, BucketBytes: spec.BucketBytes,
		LoRARank: spec.LoRARank, LoRAAlpha: spec.LoRAAlpha, LoRADropout: spec.LoRADropout, LoRATargets: spec.LoRATargets,
	}
	if spec.Beta1 != 0 || spec.Beta2 != 0 || spec.Eps != 0 {
		cfg.Beta1, cfg.Beta2, cfg.Eps = spec.Beta1, spec.Beta2, spec.Eps
	}
	return cfg
}

func or(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func orF(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}
