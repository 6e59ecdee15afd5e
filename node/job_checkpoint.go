package node

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/shard"
)

// A running job's checkpoints (written, replicated, recorded through the
// leader), its held-out evaluations, and the checks that its replicas agree.

// checkpoint runs under the runner's context, not the epoch's: a new epoch
// committed meanwhile must not abort the recording of a checkpoint already
// written (a restart of the whole cluster resumes from the last recorded).
//
// checkpoint writes the weights (Hugging Face layout), the tokenizer's
// files (putTokenizer) and the worker's snapshot into the store, has the
// next Replicas−1 members of the ring copy them, and records the
// checkpoint through the leader.
func (r *jobRunner) checkpoint(ctx context.Context, e coordinator.Epoch) error {
	n := r.n
	snap, err := r.snapshot()
	if err != nil {
		return err
	}
	stateHash, _, err := n.store.Put(bytesReader(snap))
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(r.dir, "ckpt-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// The model's files in Hugging Face's layout, or in LoRA mode the
	// adapter's in PEFT's (the frozen base is the job's).
	cfgName, wName := "config.json", "model.safetensors"
	if a := r.w.LoRA(); a != nil {
		cfgName, wName = model.AdapterConfigFile, model.AdapterWeightsFile
		if err := model.SaveAdapter(tmp, a); err != nil {
			return err
		}
	} else {
		params, err := r.w.Weights() // from the GPU, when the worker trains there
		if err != nil {
			return err
		}
		if err := model.SaveCheckpoint(tmp, r.cfg, r.tok, params); err != nil {
			return err
		}
	}
	cfgHash, _, err := n.store.PutFile(filepath.Join(tmp, cfgName))
	if err != nil {
		return err
	}
	wHash, _, err := n.store.PutFile(filepath.Join(tmp, wName))
	if err != nil {
		return err
	}
	tokHashes, err := r.putTokenizer()
	if err != nil {
		return err
	}
	hashes := append([]string{cfgHash, wHash, stateHash}, slices.Sorted(maps.Values(tokHashes))...)
	holders := []string{n.cfg.Name}
	rank := slices.Index(e.Members, n.cfg.Name)
	for i := 1; i < len(e.Members) && len(holders) < r.spec.Replicas; i++ {
		peer := e.Members[(rank+i)%len(e.Members)]
		fctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := n.callControl(fctx, peer, n.memberAddr(peer), controlRequest{Op: opFetch,
			Fetch: &fetchRequest{Hashes: hashes, From: []string{n.cfg.Name}}})
		cancel()
		if err != nil {
			n.log.Warn("checkpoint replica failed", "job", r.id, "peer", peer, "err", err)
			continue
		}
		holders = append(holders, peer)
	}
	cp := coordinator.Checkpoint{Step: r.w.Done, Config: cfgHash, Weights: wHash, State: stateHash, Hash: r.w.WeightsHash(), Holders: holders,
		Tokenizer: tokHashes, At: time.Now().UnixMilli()}
	if err := n.applyAnywhere(ctx, coordinator.RecordCheckpoint{ID: r.id, Checkpoint: cp}); err != nil {
		return err
	}
	r.lastCkpt = r.w.Done
	n.log.Info("checkpoint recorded", "job", r.id, "step", cp.Step, "holders", holders)
	return nil
}

// putTokenizer stores the files of the job's tokenizer, where it was read
// from files (the base's tokenizer.json, ...: the same bytes, so the same
// objects), and returns their hashes by file name; nil for a built-in
// tokenizer. A checkpoint records them so that its config.json, which
// names the tokenizer, can be loaded with it (an export writes them
// beside it; an adapter's export too, for the merged model).
func (r *jobRunner) putTokenizer() (map[string]string, error) {
	ft, ok := r.tok.(model.FileTokenizer)
	if !ok {
		return nil, nil
	}
	out := map[string]string{}
	for name, b := range ft.Files() {
		h, _, err := r.n.store.Put(bytesReader(b))
		if err != nil {
			return nil, err
		}
		out[name] = h
	}
	return out, nil
}

// awaitUnitEvals waits (a bounded time) until every member of a federated
// job has scored its own held-out split after the last step, so that the
// job ends with each unit's figure.
func (r *jobRunner) awaitUnitEvals(ctx context.Context, e coordinator.Epoch) {
	deadline := time.Now().Add(2 * time.Minute)
	for _, name := range e.Members {
		if name == r.n.cfg.Name {
			continue
		}
		for time.Now().Before(deadline) && ctx.Err() == nil {
			resp, err := r.n.callControl(ctx, name, r.n.memberAddr(name), controlRequest{Op: opJobProgress, JobObject: &jobObjectRequest{Job: r.id}})
			if err == nil && resp.JobProgress != nil && resp.JobProgress.HeldoutStep == r.spec.Steps {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// compareReplicas asks every member for its weights hash after step steps
// and fails the job, naming the node, when one differs from rank 0's.
func (r *jobRunner) compareReplicas(ctx context.Context, e coordinator.Epoch, step int) {
	r.mu.Lock()
	mine, ok := r.hashes[step]
	r.mu.Unlock()
	if !ok {
		return
	}
	for _, name := range e.Members {
		if name == r.n.cfg.Name {
			continue
		}
		resp, err := r.n.callControl(ctx, name, r.n.memberAddr(name), controlRequest{Op: opJobProgress, JobObject: &jobObjectRequest{Job: r.id, Step: step}})
		if err != nil || resp.JobProgress == nil || resp.JobProgress.WeightsHash == "" {
			continue // gone or not there yet: a later comparison will tell
		}
		if h := resp.JobProgress.WeightsHash; h != mine {
			msg := jobError("replicas diverged after step %d: %s's weights hash %s differs from %s's %s", step, name, h[:16], r.n.cfg.Name, mine[:16])
			r.n.log.Error("stopping the job", "job", r.id, "err", msg)
			r.n.applyAnywhere(ctx, coordinator.SetJobState{ID: r.id, State: coordinator.JobFailed, Error: msg,
				From: []coordinator.JobState{coordinator.JobRunning}})
			return
		}
	}
}

// eval scores the held-out split (rank 0).
func (r *jobRunner) eval(base bool) {
	if r.data.NumSequences(shard.Heldout) == 0 {
		return
	}
	if err := r.ensureHeldout(r.ctx); err != nil {
		r.n.log.Warn("held-out shards unavailable", "job", r.id, "err", err)
		return
	}
	loss, err := r.w.Eval()
	if err != nil {
		r.n.log.Warn("held-out evaluation failed", "job", r.id, "err", err)
		return
	}
	r.mu.Lock()
	if base {
		r.prog.BaseHeldoutLoss = loss
	}
	r.prog.HeldoutLoss, r.prog.HeldoutStep = loss, r.w.Done
	if base {
		r.hist.heldout(0, loss)
	} else {
		r.hist.heldout(r.w.Done, loss)
	}
	r.mu.Unlock()
}
