package node

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/node/blobstore"
)

// JobStatus is a job as `braid job status --json` prints it: the committed
// job merged with the progress its workers report.
type JobStatus struct {
	ID      string               `json:"id"`
	State   coordinator.JobState `json:"state"`
	Error   string               `json:"error,omitempty"`
	Waiting string               `json:"waiting,omitempty"` // why a job that has not ended cannot train now, when known
	Step    int                  `json:"step"`
	Steps   int                  `json:"steps"`
	Loss    float64              `json:"loss"`
	// The held-out losses are 0, and absent from the JSON, until
	// evaluated: absent means "not evaluated", never a loss of 0.
	HeldoutLoss     float64 `json:"heldout_loss,omitempty"`
	HeldoutStep     int     `json:"heldout_step,omitempty"`
	BaseHeldoutLoss float64 `json:"base_heldout_loss,omitempty"`
	TokensPerSec    float64 `json:"tokens_per_sec"`
	StepMS          float64 `json:"step_ms"`
	WaitMS          float64 `json:"wait_ms"`
	// WireBytesPerStep is the most any worker sent in its last step.
	WireBytesPerStep int64                    `json:"wire_bytes_per_step"`
	Epoch            uint64                   `json:"epoch"`
	Members          []string                 `json:"members"`
	WeightsHash      string                   `json:"weights_hash,omitempty"`
	Checkpoints      []coordinator.Checkpoint `json:"checkpoints,omitempty"`
	Spec             coordinator.JobSpec      `json:"spec"`
	Workers          []JobProgress            `json:"workers,omitempty"`
	// Unreachable names the members of the epoch whose progress could not
	// be read (and why): their figures are missing from the rest.
	Unreachable map[string]string `json:"unreachable,omitempty"`
}

// JobStatus merges the job's committed state with its workers' progress
// (asked of every member of the current epoch).
func (n *Node) JobStatus(ctx context.Context, id string) (JobStatus, error) {
	j, ok := n.awaitJob(ctx, id)
	if !ok {
		return JobStatus{}, fmt.Errorf("node: no job %q (see `braid job list`)", id)
	}
	st := n.coord.State()
	js := JobStatus{ID: j.ID, State: j.State, Error: j.Error, Steps: j.Spec.Steps, Spec: j.Spec,
		Checkpoints: j.Checkpoints, Epoch: st.Epoch.ID, Members: slices.Clone(st.Epoch.Members)}
	if cp, ok := j.LastCheckpoint(); ok {
		js.Step, js.WeightsHash = cp.Step, cp.Hash
	}
	if dev := j.Spec.DeviceKind(); !j.State.Final() && len(st.AliveOn(dev)) == 0 {
		js.Waiting = fmt.Sprintf("no alive member computes on %s: start one with `braid node --device %s`", dev, dev)
		if alive := len(st.Alive()); alive > 0 {
			other := coordinator.DeviceCUDA
			if dev == coordinator.DeviceCUDA {
				other = coordinator.DeviceCPU
			}
			js.Waiting += fmt.Sprintf(", or submit the job with --device %s, where the %d alive members compute", other, alive)
		}
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, name := range st.Epoch.Members {
		wg.Go(func() {
			var p *JobProgress
			if name == n.cfg.Name {
				if r := n.currentRunner(id); r != nil {
					pr := r.progress()
					p = &pr
				} else {
					n.jobMu.Lock()
					if pr, ok := n.finished[id]; ok {
						p = &pr
					}
					n.jobMu.Unlock()
				}
			} else {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err := n.callControl(cctx, name, n.memberAddr(name), controlRequest{Op: opJobProgress, JobObject: &jobObjectRequest{Job: id}})
				cancel()
				if err != nil {
					mu.Lock()
					if js.Unreachable == nil {
						js.Unreachable = map[string]string{}
					}
					js.Unreachable[name] = err.Error()
					mu.Unlock()
				}
				if err == nil {
					p = resp.JobProgress
				}
			}
			if p != nil {
				mu.Lock()
				js.Workers = append(js.Workers, *p)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(js.Workers, func(a, b JobProgress) int { return a.Rank - b.Rank })
	for _, p := range js.Workers {
		if p.Step > js.Step || p.Step == js.Step && js.Loss == 0 {
			js.Step, js.Loss, js.WeightsHash = p.Step, p.Loss, p.WeightsHash
		}
		if p.HeldoutStep >= js.HeldoutStep && p.HeldoutLoss != 0 {
			js.HeldoutLoss, js.HeldoutStep = p.HeldoutLoss, p.HeldoutStep
		}
		if p.BaseHeldoutLoss != 0 {
			js.BaseHeldoutLoss = p.BaseHeldoutLoss
		}
		js.TokensPerSec += p.TokensPerSec
		js.StepMS = max(js.StepMS, p.StepMS)
		js.WaitMS = max(js.WaitMS, p.WaitMS)
		js.WireBytesPerStep = max(js.WireBytesPerStep, p.WireBytesPerStep)
	}
	return js, nil
}

// awaitJob returns job id from this node's copy of the state. A job
// submitted a moment ago through another node may not have reached it
// yet: for one it does not hold, it waits up to 3 s (less if ctx ends).
func (n *Node) awaitJob(ctx context.Context, id string) (coordinator.Job, bool) {
	if j, ok := n.coord.State().Job(id); ok {
		return j, true
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	n.awaitState(wctx, func(st coordinator.State) bool { _, ok := st.Job(id); return ok })
	cancel()
	return n.coord.State().Job(id)
}

// jobRoutes serves the job endpoints of the HTTP API:
//
//	GET  /v1/jobs                        the jobs (JSON array)
//	POST /v1/jobs                        submit (JobRequest) → the job
//	GET  /v1/jobs/{id}                   JobStatus
//	POST /v1/jobs/{id}/cancel            cancel
//	GET  /v1/jobs/{id}/files/{name}      a file of the job's last checkpoint:
//	                                     config.json, model.safetensors (or a
//	                                     LoRA job's adapter files), its
//	                                     tokenizer's files (tokenizer.json,
//	                                     ...); base-NAME: the base's file NAME;
//	                                     merged-NAME: a file of the merged
//	                                     model of the last provenance
//	                                     export with merged (provenance.go)
//
// A job this node does not know (after awaitJob) is 404 Not Found.
func (n *Node) jobRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.coord.State().Jobs)
	})
	mux.HandleFunc("POST /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		var req JobRequest
		if err := readJSON(w, r, 64<<10, &req); err != nil {
			http.Error(w, "braid: job request: "+err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		j, err := n.SubmitJob(ctx, req)
		if err != nil {
			http.Error(w, "braid: "+err.Error(), http.StatusUnprocessableEntity)
			return
		}
		writeJSON(w, http.StatusOK, j)
	})
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		js, err := n.JobStatus(r.Context(), r.PathValue("id"))
		if err != nil {
			http.Error(w, "braid: "+err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, js)
	})
	mux.HandleFunc("POST /v1/jobs/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := n.awaitJob(r.Context(), r.PathValue("id")); !ok {
			http.Error(w, fmt.Sprintf("braid: node: no job %q", r.PathValue("id")), http.StatusNotFound)
			return
		}
		if err := n.CancelJob(r.Context(), r.PathValue("id")); err != nil {
			http.Error(w, "braid: "+err.Error(), http.StatusConflict)
			return
		}
		j, _ := n.coord.State().Job(r.PathValue("id"))
		writeJSON(w, http.StatusOK, j)
	})
	mux.HandleFunc("GET /v1/jobs/{id}/files/{name}", func(w http.ResponseWriter, r *http.Request) {
		j, ok := n.awaitJob(r.Context(), r.PathValue("id"))
		if !ok {
			http.Error(w, fmt.Sprintf("braid: node: no job %q", r.PathValue("id")), http.StatusNotFound)
			return
		}
		cp, ok := j.LastCheckpoint()
		if !ok {
			http.Error(w, "braid: the job has no checkpoint yet", http.StatusNotFound)
			return
		}
		// The checkpoint's files (the model's, or a LoRA job's adapter
		// files, and the tokenizer's), and the job's base model's under
		// base-.
		var h string
		holders := cp.Holders
		lora := j.Spec.LoRARank > 0
		name := r.PathValue("name")
		base, isBase := strings.CutPrefix(name, "base-")
		merged, isMerged := strings.CutPrefix(name, "merged-")
		switch {
		case !lora && name == "config.json", lora && name == model.AdapterConfigFile:
			h = cp.Config
		case !lora && name == "model.safetensors", lora && name == model.AdapterWeightsFile:
			h = cp.Weights
		case cp.Tokenizer[name] != "":
			h = cp.Tokenizer[name]
		case isBase && base == "config.json":
			h, holders = j.Spec.Base.Config, nil
		case isBase && base == "model.safetensors":
			h, holders = j.Spec.Base.Weights, nil
		case isBase && j.Spec.Base.Tokenizer[base] != "":
			h, holders = j.Spec.Base.Tokenizer[base], nil
		case isMerged && n.mergedFile(j, merged) != "":
			h, holders = n.mergedFile(j, merged), nil
		default:
			http.Error(w, "braid: no such file of this job's checkpoint", http.StatusNotFound)
			return
		}
		if err := n.ensureObject(r.Context(), h, blobstore.SizeUnknown, append(holders, j.SubmittedBy)...); err != nil {
			http.Error(w, "braid: fetching the checkpoint: "+err.Error(), http.StatusBadGateway)
			return
		}
		f, size, err := n.store.Open(h)
		if err != nil {
			http.Error(w, "braid: "+err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.Header().Set("X-Braid-Sha256", h)
		w.Header().Set("X-Braid-Step", fmt.Sprint(cp.Step))
		io.Copy(w, f)
	})
}
