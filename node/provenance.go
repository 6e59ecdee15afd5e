package node

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
	"github.com/braidml/braid/node/blobstore"
	"github.com/braidml/braid/provenance"
	"github.com/braidml/braid/shard"
)

// The provenance of an exported model (package provenance): the record of
// a job's last checkpoint, built from the replicated state, not from what
// the exporting client says, and signed here with this node's cluster
// certificate, whose key never leaves the node. `braid job export` fetches
// the record and its signature and writes them beside the weights.
//
//	GET /v1/jobs/{id}/provenance[?merged=1]   ProvenanceExport
//
// With merged=1 (a LoRA job's `export --merged`) the node merges the
// adapter into the base itself, so that the record names the bytes the
// client then downloads (files merged-NAME): a merge on another machine
// may round differently (its kernels), and a signature over hashes the node
// never computed would vouch for nothing.

// ProvenanceExport is the answer of GET /v1/jobs/{id}/provenance.
type ProvenanceExport struct {
	// Record is provenance.json's exact bytes: the signature covers them.
	Record []byte `json:"record"`
	// Signature is provenance.sig; nil when this node has no certificate
	// of its own (a node on a transport it did not build, in tests).
	Signature []byte `json:"signature,omitempty"`
}

// ErrNoCheckpoint: the job has nothing to export yet.
var ErrNoCheckpoint = errors.New("node: the job has no checkpoint yet")

// JobProvenance builds and signs the provenance record of job id's last
// checkpoint: the files `braid job export` writes (with merged, those of
// the base with the adapter merged in, which it computes and keeps for the
// download), the base, the datasets, the spec, the epochs that served its
// steps, its checkpoints and its held-out figures.
func (n *Node) JobProvenance(ctx context.Context, id string, merged bool) (ProvenanceExport, error) {
	j, ok := n.awaitJob(ctx, id)
	if !ok {
		return ProvenanceExport{}, fmt.Errorf("node: no job %q (see `braid job list`)", id)
	}
	cp, ok := j.LastCheckpoint()
	if !ok {
		return ProvenanceExport{}, ErrNoCheckpoint
	}
	lora := j.Spec.LoRARank > 0
	if merged && !lora {
		return ProvenanceExport{}, fmt.Errorf("node: job %s trained the full model: there is no adapter to merge", id)
	}
	spec, err := json.Marshal(j.Spec)
	if err != nil {
		return ProvenanceExport{}, err
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	rec := &provenance.Record{Format: provenance.FormatVersion, Kind: provenance.KindJob, Braid: n.cfg.Build, Job: j.ID,
		Spec: spec, ConfigHash: trainConfig(j.Spec).Hash(), Steps: cp.Step, Exported: now}
	if rec.Braid == "" {
		rec.Braid = "dev"
	}
	prefer := append(slices.Clone(cp.Holders), j.SubmittedBy)
	files := checkpointFiles(cp, lora)
	if rec.Files, err = n.objectFiles(ctx, files, prefer); err != nil {
		return ProvenanceExport{}, err
	}
	if merged {
		rec.MergedFrom = rec.Files
		if rec.Files, err = n.mergedModel(ctx, j, cp); err != nil {
			return ProvenanceExport{}, err
		}
	} else if dtype, ok := n.exportDtype(j.Spec.Base.Config); ok && !lora {
		if rec.Files, err = n.roundedModel(ctx, j, cp, dtype); err != nil {
			return ProvenanceExport{}, err
		}
	}
	baseFiles := modelFiles(j.Spec.Base.Config, j.Spec.Base.Weights, j.Spec.Base.Tokenizer, "config.json", "model.safetensors")
	if rec.Base.Files, err = n.objectFiles(ctx, baseFiles, []string{j.SubmittedBy}); err != nil {
		return ProvenanceExport{}, err
	}
	rec.Base.Name = n.modelName(j.Spec.Base.Config)
	rec.Datasets = n.provenanceDatasets(ctx, n.coord.State(), j.Spec)
	rec.Epochs, rec.EpochsNote = epochRanges(j.Epochs, cp.Step)
	for _, c := range j.Checkpoints {
		pc := provenance.Checkpoint{Step: c.Step, WeightsHash: c.Hash, Holders: slices.Clone(c.Holders), At: unixMilli(c.At)}
		pc.Files = checkpointFiles(c, lora)
		pc.Files["state"] = c.State
		rec.Checkpoints = append(rec.Checkpoints, pc)
	}
	keep := j.Spec.KeepCheckpoints
	if keep == 0 {
		keep = coordinator.MaxCheckpoints
	}
	if len(j.Checkpoints) == keep {
		rec.CheckpointsNote = fmt.Sprintf("the cluster keeps the newest %d checkpoint records of this job; any before step %d are not in its state",
			keep, j.Checkpoints[0].Step)
	}
	heldout, firstStep := n.heldoutHistory(ctx, j)
	for _, h := range heldout {
		if h.Step <= cp.Step { // not the figures of steps after these weights (a running job)
			rec.Heldout = append(rec.Heldout, h)
		}
	}
	rec.Started = firstStep
	if len(j.Epochs) > 0 && j.Epochs[0].FirstStep == 1 && j.Epochs[0].At > 0 {
		rec.Started = unixMilli(j.Epochs[0].At)
	}
	rec.Finished = unixMilli(cp.At)
	return n.signRecord(rec)
}

// signRecord encodes the record and signs it with this node's
// certificate, naming the node as its signer; unsigned when the node has
// no certificate of its own.
func (n *Node) signRecord(rec *provenance.Record) (ProvenanceExport, error) {
	if n.certs.creds == nil {
		b, err := rec.Encode()
		return ProvenanceExport{Record: b}, err
	}
	cert := n.certs.creds.Current().Cert
	key, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return ProvenanceExport{}, fmt.Errorf("node: the key of this node's certificate cannot sign (%T)", cert.PrivateKey)
	}
	rec.Signer = n.cfg.Name
	b, err := rec.Encode()
	if err != nil {
		return ProvenanceExport{}, err
	}
	sig, err := provenance.Sign(b, key, cert.Certificate)
	if err != nil {
		return ProvenanceExport{}, err
	}
	return ProvenanceExport{Record: b, Signature: sig}, nil
}

// checkpointFiles are the files of checkpoint cp an export writes, by
// name: the model's (or a LoRA job's adapter's) and the tokenizer's.
func checkpointFiles(cp coordinator.Checkpoint, lora bool) map[string]string {
	if lora {
		return modelFiles(cp.Config, cp.Weights, cp.Tokenizer, model.AdapterConfigFile, model.AdapterWeightsFile)
	}
	return modelFiles(cp.Config, cp.Weights, cp.Tokenizer, "config.json", "model.safetensors")
}

// modelFiles maps the file names of a model to their hashes; tokenizer
// files of names the coordinator does not admit are left out, as the
// export leaves them out.
func modelFiles(config, weights string, tokenizer map[string]string, configName, weightsName string) map[string]string {
	out := map[string]string{configName: config, weightsName: weights}
	for name, h := range tokenizer {
		if coordinator.ValidTokenizerFile(name) {
			out[name] = h
		}
	}
	return out
}

// objectFiles describes the named objects (fetched from prefer first if
// this node lacks them), sorted by name. Objects are named by their
// SHA-256, so the hash is the file's.
func (n *Node) objectFiles(ctx context.Context, files map[string]string, prefer []string) ([]provenance.File, error) {
	var out []provenance.File
	for _, name := range slices.Sorted(maps.Keys(files)) {
		h := files[name]
		if err := n.ensureObject(ctx, h, blobstore.SizeUnknown, prefer...); err != nil {
			return nil, fmt.Errorf("node: provenance: %s (%s): %w", name, h[:12], err)
		}
		info, err := n.store.Stat(h)
		if err != nil {
			return nil, fmt.Errorf("node: provenance: %s: %w", name, err)
		}
		out = append(out, provenance.File{Name: name, SHA256: h, Bytes: info.Size})
	}
	return out, nil
}

// modelName is a model's name for people, from its config.json
// (_name_or_path, as Hugging Face writes it); "" when it has none. The
// hashes identify the model; the name only helps a reader.
func (n *Node) modelName(configHash string) string {
	b, err := n.readObject(configHash, 1<<20)
	if err != nil {
		return ""
	}
	var cfg struct {
		Name string `json:"_name_or_path"`
	}
	if json.Unmarshal(b, &cfg) != nil || len(cfg.Name) > 200 {
		return ""
	}
	return cfg.Name
}

// exportDtype is the dtype `braid job export` writes a full fine-tuning
// job's model in when it is not the checkpoint's float32: the base's, by
// its config.json's torch_dtype (cmd/braid's exportInBaseDtype).
func (n *Node) exportDtype(baseConfig string) (safetensors.Dtype, bool) {
	b, err := n.readObject(baseConfig, 1<<20)
	if err != nil {
		return "", false
	}
	return model.NarrowDtype(b)
}

// roundedModel writes checkpoint cp's model in dtype as the export does
// (rounding to nearest, ties to even: the same bytes on any machine) and
// describes its files, so that the record names what the export writes.
func (n *Node) roundedModel(ctx context.Context, j coordinator.Job, cp coordinator.Checkpoint, dtype safetensors.Dtype) ([]provenance.File, error) {
	tmp, err := n.exportTemp()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	in, out := filepath.Join(tmp, "in"), filepath.Join(tmp, "out")
	if err := os.MkdirAll(in, 0o700); err != nil {
		return nil, err
	}
	for name, h := range checkpointFiles(cp, false) {
		if err := n.ensureObject(ctx, h, blobstore.SizeUnknown, append(slices.Clone(cp.Holders), j.SubmittedBy)...); err != nil {
			return nil, fmt.Errorf("node: provenance: %s: %w", name, err)
		}
		if err := n.linkObject(h, in, name); err != nil {
			return nil, err
		}
	}
	ck, err := model.LoadCheckpoint(in)
	if err != nil {
		return nil, err
	}
	if err := model.SaveCheckpointAs(out, ck.Config, ck.Tokenizer, ck.Params, model.WeightsFormat{Dtype: dtype}); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return provenance.HashFiles(out, names)
}

// exportTemp makes a temporary directory for an export's files under the
// node's jobs directory (on the store's file system: linked, not copied).
func (n *Node) exportTemp() (string, error) {
	jobs := filepath.Join(n.cfg.DataDir, "jobs")
	if err := os.MkdirAll(jobs, 0o700); err != nil {
		return "", err
	}
	return os.MkdirTemp(jobs, "export-")
}

// provenanceDatasets describes the job's datasets from the replicated
// state, with the counts of their manifests where this node can read them
// (a federated unit's manifest may be on its unit only: then the counts of
// sequences come from the state, and its documents and tokens are left
// out). Never the data.
func (n *Node) provenanceDatasets(ctx context.Context, st coordinator.State, spec coordinator.JobSpec) []provenance.Dataset {
	ids := spec.Datasets
	if len(ids) == 0 {
		ids = []string{spec.Dataset}
	}
	var out []provenance.Dataset
	for _, id := range ids {
		d, ok := st.Dataset(id)
		if !ok {
			out = append(out, provenance.Dataset{ID: id, Name: "(deleted from the cluster since)"})
			continue
		}
		pd := provenance.Dataset{ID: d.ID, Name: d.Name, Manifest: d.Manifest}
		if spec.Federated || d.Local {
			pd.Holder = d.Source
		}
		for _, s := range d.Shards {
			if s.Split == string(shard.Heldout) {
				pd.HeldoutSequences += int64(s.Sequences)
			} else {
				pd.TrainSequences += int64(s.Sequences)
			}
		}
		// A local dataset's manifest is read only where it is: its unit
		// serves no byte of it.
		err := errors.New("not here")
		if n.store.Has(d.Manifest) {
			err = nil
		} else if !d.Local {
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = n.ensureObject(fctx, d.Manifest, blobstore.SizeUnknown, d.Source)
			cancel()
		}
		if err == nil {
			if b, err := n.readObject(d.Manifest, shard.MaxManifestBytes); err == nil {
				if m, err := shard.DecodeManifest(b); err == nil {
					pd.Documents, pd.Tokens = m.Source.Documents, m.Source.Tokens
				}
			}
		}
		out = append(out, pd)
	}
	return out
}

// epochRanges turns a job's epoch records into the step ranges each served
// up to step last (the exported checkpoint's), and says what the records
// do not cover.
func epochRanges(epochs []coordinator.JobEpoch, last int) ([]provenance.Epoch, string) {
	var out []provenance.Epoch
	for i, e := range epochs {
		if e.FirstStep > last {
			break // after the exported checkpoint
		}
		end := last
		if i+1 < len(epochs) {
			end = min(last, epochs[i+1].FirstStep-1)
		}
		if end < e.FirstStep {
			continue // an epoch whose steps the next one redid
		}
		out = append(out, provenance.Epoch{Epoch: e.Epoch, Members: slices.Clone(e.Members), FirstStep: e.FirstStep, LastStep: end})
	}
	switch {
	case len(out) == 0:
		return nil, "the cluster recorded no epochs for this job (a braid before epoch records trained it)"
	case out[0].FirstStep > 1:
		return out, fmt.Sprintf("steps 1–%d were served by epochs whose records are gone (the cluster keeps the newest %d)",
			out[0].FirstStep-1, coordinator.MaxJobEpochs)
	}
	return out, ""
}

// heldoutHistory is the job's held-out losses by step, from its history
// (JobHistory: the base model's at step 0, then every evaluated step of
// the worker that ran furthest), and the time of its first step. In a
// federated job each unit evaluates its own split: that worker's figures
// are its unit's, and the other units' latest come from their progress
// (JobStatus).
func (n *Node) heldoutHistory(ctx context.Context, j coordinator.Job) ([]provenance.Heldout, *time.Time) {
	var out []provenance.Heldout
	var first *time.Time
	h, err := n.JobHistory(ctx, j.ID)
	unit := ""
	if j.Spec.Federated {
		unit = h.Node
	}
	if err == nil {
		if h.BaseHeldoutLoss != nil {
			out = append(out, provenance.Heldout{Step: 0, Loss: *h.BaseHeldoutLoss, Unit: unit})
		}
		for _, p := range h.Points {
			if p.HeldoutLoss != nil {
				out = append(out, provenance.Heldout{Step: p.Step, Loss: *p.HeldoutLoss, Unit: unit})
			}
		}
		if len(h.Points) > 0 && h.Points[0].Step == 1 && !h.Points[0].Time.IsZero() {
			t := h.Points[0].Time.UTC()
			first = &t
		}
	}
	if !j.Spec.Federated {
		return out, first
	}
	js, err := n.JobStatus(ctx, j.ID)
	if err != nil {
		return out, first
	}
	for _, w := range js.Workers {
		if w.Node != unit && w.HeldoutLoss != 0 {
			out = append(out, provenance.Heldout{Step: w.HeldoutStep, Loss: w.HeldoutLoss, Unit: w.Node})
		}
	}
	return out, first
}

func unixMilli(ms int64) *time.Time {
	if ms <= 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

// mergedExports keeps, per job, the files of the merged model this node
// computed for its last export (objects of the store), so that the client
// downloads exactly the bytes the signed record names.
type mergedExports struct {
	mu    sync.Mutex
	byJob map[string]mergedExport // at most maxMergedExports
}

type mergedExport struct {
	adapter string            // the checkpoint's adapter weights hash it was merged from
	files   map[string]string // file name → object hash
}

const maxMergedExports = 8

func (m *mergedExports) get(job, adapter string) (map[string]string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.byJob[job]
	return e.files, ok && e.adapter == adapter
}

func (m *mergedExports) put(job, adapter string, files map[string]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byJob == nil {
		m.byJob = map[string]mergedExport{}
	}
	if _, ok := m.byJob[job]; !ok && len(m.byJob) >= maxMergedExports {
		for k := range m.byJob {
			delete(m.byJob, k) // any one: a client that lost it asks again
			break
		}
	}
	m.byJob[job] = mergedExport{adapter: adapter, files: files}
}

// mergedFile is the object of file name of job j's merged model, computed
// by the last JobProvenance with merged for its last checkpoint ("" when
// there is none).
func (n *Node) mergedFile(j coordinator.Job, name string) string {
	cp, ok := j.LastCheckpoint()
	if !ok {
		return ""
	}
	files, ok := n.merged.get(j.ID, cp.Weights)
	if !ok || !n.store.Has(files[name]) {
		return ""
	}
	return files[name]
}

// mergedModel merges the adapter of checkpoint cp into job j's base here,
// stores the files and describes them.
func (n *Node) mergedModel(ctx context.Context, j coordinator.Job, cp coordinator.Checkpoint) ([]provenance.File, error) {
	tmp, err := n.exportTemp()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	baseDir, adapterDir, outDir := filepath.Join(tmp, "base"), filepath.Join(tmp, "adapter"), filepath.Join(tmp, "merged")
	for dir, files := range map[string]map[string]string{
		baseDir:    modelFiles(j.Spec.Base.Config, j.Spec.Base.Weights, j.Spec.Base.Tokenizer, "config.json", "model.safetensors"),
		adapterDir: modelFiles(cp.Config, cp.Weights, nil, model.AdapterConfigFile, model.AdapterWeightsFile),
	} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		for name, h := range files {
			if err := n.ensureObject(ctx, h, blobstore.SizeUnknown, append(slices.Clone(cp.Holders), j.SubmittedBy)...); err != nil {
				return nil, fmt.Errorf("node: merging: %s: %w", name, err)
			}
			if err := n.linkObject(h, dir, name); err != nil {
				return nil, err
			}
		}
	}
	if err := model.MergeAdapterFiles(baseDir, adapterDir, outDir); err != nil {
		return nil, fmt.Errorf("node: merging the adapter of job %s into its base: %w", j.ID, err)
	}
	entries, err := os.ReadDir(outDir)
	if err != nil {
		return nil, err
	}
	var out []provenance.File
	stored := map[string]string{}
	for _, e := range entries {
		h, size, err := n.store.PutFile(filepath.Join(outDir, e.Name()))
		if err != nil {
			return nil, err
		}
		stored[e.Name()] = h
		out = append(out, provenance.File{Name: e.Name(), SHA256: h, Bytes: size})
	}
	n.merged.put(j.ID, cp.Weights, stored)
	return provenance.SortFiles(out), nil
}

// maxProvenanceBuilds bounds the provenance records a node builds at once:
// a build reads the checkpoint and base model, may merge or round the
// weights (the model in memory, new objects in the store) and signs.
const maxProvenanceBuilds = 2

// buildSlots is a counting semaphore that never waits (its zero value is
// ready).
type buildSlots struct {
	mu   sync.Mutex
	busy int
}

// tryAcquire takes a slot if fewer than max are taken, and reports whether
// it did.
func (s *buildSlots) tryAcquire(max int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy >= max {
		return false
	}
	s.busy++
	return true
}

func (s *buildSlots) release() {
	s.mu.Lock()
	s.busy--
	s.mu.Unlock()
}

// provenanceRoutes serves GET /v1/jobs/{id}/provenance. At most
// maxProvenanceBuilds requests build at once on a node; one more is
// refused at once with 429 and Retry-After rather than queued: a build
// may take minutes, and a queue would hold API connections (and the
// client's patience) for as long, while the refusal says what to do.
func (n *Node) provenanceRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/jobs/{id}/provenance", func(w http.ResponseWriter, r *http.Request) {
		if !n.provBuilds.tryAcquire(maxProvenanceBuilds) {
			w.Header().Set("Retry-After", "30")
			http.Error(w, fmt.Sprintf("braid: node: %d provenance records (model exports) are being built on this node already, "+
				"the most it builds at once (each may load and merge the model); retry in a while", maxProvenanceBuilds),
				http.StatusTooManyRequests)
			return
		}
		defer n.provBuilds.release()
		if _, ok := n.awaitJob(r.Context(), r.PathValue("id")); !ok {
			http.Error(w, fmt.Sprintf("braid: node: no job %q", r.PathValue("id")), http.StatusNotFound)
			return
		}
		merged := r.URL.Query().Get("merged") == "1"
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
		defer cancel()
		pe, err := n.JobProvenance(ctx, r.PathValue("id"), merged)
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, pe)
		case errors.Is(err, ErrNoCheckpoint):
			http.Error(w, "braid: "+err.Error(), http.StatusNotFound)
		default:
			http.Error(w, "braid: "+err.Error(), http.StatusUnprocessableEntity)
		}
	})
}

// recordEpochServed records, through the leader, that epoch e served the
// job from step first (the first step done on its ring): rank 0 calls it
// once per epoch, after that step. A failure costs only the record (the
// provenance then says its steps are not covered), not the job.
func (r *jobRunner) recordEpochServed(e coordinator.Epoch, first int) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	err := r.n.applyAnywhere(ctx, coordinator.RecordJobEpoch{ID: r.id,
		Epoch: coordinator.JobEpoch{Epoch: e.ID, Members: slices.Clone(e.Members), FirstStep: first, At: time.Now().UnixMilli()}})
	if err != nil && !errors.Is(err, coordinator.ErrStaleEpoch) && !errors.Is(err, coordinator.ErrJobFinal) {
		r.n.log.Warn("recording the epoch that serves the job failed", "job", r.id, "epoch", e.ID, "step", first, "err", err)
	}
}
