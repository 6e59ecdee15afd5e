package provenance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/braidml/braid/internal/atomicfile"
)

// WriteDir writes into dir the record (the exact bytes that sig covers),
// its signature (nil: unsigned, and a provenance.sig left from an earlier
// export is removed, so that it cannot be taken for this record's) and the
// model card rendered from the record. Each file is replaced atomically;
// the signature goes in before the record, so that a crash between the
// two leaves a pair that fails to verify rather than one that passes.
func WriteDir(dir string, record, sig []byte) (err error) {
	rec, err := Decode(record)
	if err != nil {
		return err
	}
	var staged []*atomicfile.Pending
	defer func() {
		for _, p := range staged {
			p.Abort() // those not committed
		}
	}()
	stage := func(name string, b []byte) error {
		p, err := atomicfile.Stage(filepath.Join(dir, name), 0o644, func(w io.Writer) error { _, err := w.Write(b); return err })
		if err == nil {
			staged = append(staged, p)
		}
		return err
	}
	if sig != nil {
		if err := stage(SignatureFile, sig); err != nil {
			return err
		}
	} else if err := os.Remove(filepath.Join(dir, SignatureFile)); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := stage(RecordFile, record); err != nil {
		return err
	}
	if err := stage(CardFile, Card(rec)); err != nil {
		return err
	}
	for len(staged) > 0 {
		p := staged[0]
		staged = staged[1:]
		if err := p.Commit(); err != nil {
			return err
		}
	}
	// One fsync of the directory for the three renames.
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("provenance: %s: %w", dir, err)
	}
	return nil
}

// yamlString quotes s for YAML front matter (a JSON string is a YAML
// double-quoted scalar).
func yamlString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// short abbreviates a hash for prose; the record keeps it whole.
func short(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return h
}

// Card renders the record as a model card in Hugging Face's layout: YAML
// front matter (base_model, library_name, tags, datasets), then the
// training data, the procedure, the results and how to verify the files.
// It is derived from the record and not signed: provenance.json is the
// authority.
func Card(rec *Record) []byte {
	var spec map[string]any
	json.Unmarshal(rec.Spec, &spec) // a spec that is not an object leaves the map empty
	num := func(k string) float64 { v, _ := spec[k].(float64); return v }
	lora, federated, diloco := num("lora_rank") > 0, spec["federated"] == true, num("inner_steps") > 0

	var b bytes.Buffer
	base := rec.Base.Name
	if base == "" {
		base = "braid base " + short(weightsHash(rec.Base.Files))
	}
	fmt.Fprintf(&b, "---\nbase_model: %s\nlibrary_name: braid\ntags:\n- braid\n- fine-tuned\n", yamlString(base))
	if lora {
		fmt.Fprintf(&b, "- lora\n")
	}
	if federated {
		fmt.Fprintf(&b, "- federated\n")
	}
	if len(rec.Datasets) > 0 {
		fmt.Fprintf(&b, "datasets:\n")
		for _, d := range rec.Datasets {
			fmt.Fprintf(&b, "- %s\n", yamlString(d.Name))
		}
	}
	fmt.Fprintf(&b, "---\n\n")
	title := "Model trained with braid"
	if rec.Job != "" {
		title = "braid job " + rec.Job
	}
	fmt.Fprintf(&b, "# %s\n\nFine-tuned from `%s` (weights sha256 `%s`)", title, base, weightsHash(rec.Base.Files))
	if len(rec.MergedFrom) > 0 {
		fmt.Fprintf(&b, ": the base with the trained LoRA adapter merged in")
	} else if lora {
		fmt.Fprintf(&b, ": a LoRA adapter in PEFT's layout, to load over that base")
	}
	fmt.Fprintf(&b, ".\n\n## Training data\n\n")
	if len(rec.Datasets) == 0 {
		fmt.Fprintf(&b, "No dataset is recorded.\n")
	}
	for _, d := range rec.Datasets {
		fmt.Fprintf(&b, "- **%s**", d.Name)
		if d.ID != "" {
			fmt.Fprintf(&b, " (id `%s`)", short(d.ID))
		}
		var counts []string
		for _, c := range []struct {
			n    int64
			what string
		}{{d.Documents, "documents"}, {d.Tokens, "tokens"}, {d.TrainSequences, "training sequences"}, {d.HeldoutSequences, "held-out sequences"}} {
			if c.n > 0 {
				counts = append(counts, fmt.Sprintf("%d %s", c.n, c.what))
			}
		}
		if len(counts) > 0 {
			fmt.Fprintf(&b, ": %s", strings.Join(counts, ", "))
		}
		if d.Holder != "" {
			fmt.Fprintf(&b, "; held by unit %s, whose data never left it", d.Holder)
		}
		if len(d.Files) > 0 {
			fmt.Fprintf(&b, "; %d input files (names and sha256 in %s)", len(d.Files), RecordFile)
		}
		fmt.Fprintf(&b, "\n")
	}
	fmt.Fprintf(&b, "\nThe record names the data by its manifests and counts; it holds none of it.\n\n## Training procedure\n\n")
	fmt.Fprintf(&b, "%d optimizer steps", rec.Steps)
	if gb := num("global_batch"); gb > 0 {
		fmt.Fprintf(&b, ", global batch %g sequences", gb)
	}
	if lr := num("lr"); lr > 0 {
		fmt.Fprintf(&b, ", peak learning rate %g", lr)
	}
	if lora {
		fmt.Fprintf(&b, ", LoRA rank %g", num("lora_rank"))
	}
	if diloco {
		fmt.Fprintf(&b, ", DiLoCo with %g local steps between all-reduces", num("inner_steps"))
	}
	if federated {
		fmt.Fprintf(&b, ", federated: each unit trained on its own data only")
	}
	fmt.Fprintf(&b, ". The full configuration is `spec` in %s", RecordFile)
	if rec.ConfigHash != "" {
		fmt.Fprintf(&b, " (config hash `%s`)", short(rec.ConfigHash))
	}
	fmt.Fprintf(&b, ".\n")
	if len(rec.Epochs) > 0 {
		fmt.Fprintf(&b, "\n| epoch | members | steps |\n|---|---|---|\n")
		for _, e := range rec.Epochs {
			fmt.Fprintf(&b, "| %d | %s | %d–%d |\n", e.Epoch, strings.Join(e.Members, ", "), e.FirstStep, e.LastStep)
		}
	}
	if rec.EpochsNote != "" {
		fmt.Fprintf(&b, "\n%s\n", rec.EpochsNote)
	}
	if rec.Started != nil && rec.Finished != nil {
		fmt.Fprintf(&b, "\nTrained from %s to %s (%s).\n", rec.Started.UTC().Format(time.RFC3339), rec.Finished.UTC().Format(time.RFC3339),
			rec.Finished.Sub(*rec.Started).Round(time.Second))
	}
	fmt.Fprintf(&b, "\n## Results\n\n")
	if len(rec.Heldout) == 0 {
		fmt.Fprintf(&b, "No held-out evaluation is recorded.\n")
	} else {
		fmt.Fprintf(&b, "| step | held-out loss | unit |\n|---|---|---|\n")
		for _, h := range rec.Heldout {
			unit := h.Unit
			if unit == "" {
				unit = "all"
			}
			fmt.Fprintf(&b, "| %d | %.4f | %s |\n", h.Step, h.Loss, unit)
		}
	}
	fmt.Fprintf(&b, "\n## Provenance and verification\n\n")
	if rec.Signer != "" {
		fmt.Fprintf(&b, "%s was signed by node `%s` of the training cluster (its certificate is in %s) when it was exported, %s. ",
			RecordFile, rec.Signer, SignatureFile, rec.Exported.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintf(&b, "%s is not signed. ", RecordFile)
	}
	fmt.Fprintf(&b, "It records the base model, the datasets, the configuration, the members that trained each range of steps, "+
		"the checkpoints and the SHA-256 of every file here. Check this directory with braid %s:\n\n", rec.Braid)
	if rec.Signer != "" {
		fmt.Fprintf(&b, "    braid verify --ca ca.pem DIR\n\nwhere ca.pem is the cluster CA (`braid ca init`).")
	} else {
		fmt.Fprintf(&b, "    braid verify --allow-unsigned DIR\n\nwhich checks the hashes only.")
	}
	fmt.Fprintf(&b, " It names any file that does not match.\n\n| file | sha256 |\n|---|---|\n")
	for _, f := range rec.Files {
		fmt.Fprintf(&b, "| %s | `%s` |\n", f.Name, f.SHA256)
	}
	return b.Bytes()
}

// weightsHash picks the weights file's hash among a model's files (the
// .safetensors one), or the first.
func weightsHash(files []File) string {
	for _, f := range files {
		if strings.HasSuffix(f.Name, ".safetensors") {
			return f.SHA256
		}
	}
	if len(files) > 0 {
		return files[0].SHA256
	}
	return ""
}
