package provenance

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/braidml/braid/internal/jsonerr"
	"github.com/braidml/braid/internal/safefile"
)

// File names in an exported directory.
const (
	RecordFile    = "provenance.json"
	SignatureFile = "provenance.sig"
	CardFile      = "README.md"
)

// FormatVersion is the version of the record's form this package writes
// and reads.
const FormatVersion = 1

// MaxRecordBytes bounds provenance.json; Decode refuses larger input.
const MaxRecordBytes = 4 << 20

// Kinds of record.
const (
	KindJob   = "job"   // `braid job export`: built from the cluster's replicated state
	KindTrain = "train" // a single-process `braid train` run
)

// Record is provenance.json. Every hash is the hex SHA-256 of a file's
// bytes. The record names data by its manifests and counts, never by its
// content.
type Record struct {
	Format int    `json:"format"` // FormatVersion
	Kind   string `json:"kind"`   // KindJob or KindTrain
	// Braid is the version of the braid that wrote the record.
	Braid string `json:"braid_version"`
	// Job is the cluster job's id (KindJob).
	Job string `json:"job,omitempty"`
	// Signer is the name of the node whose certificate signs the record
	// (empty when unsigned); provenance.sig carries the certificate.
	Signer string `json:"signer,omitempty"`

	// Files are the files of the exported directory the record vouches
	// for, sorted by name: the weights and their config and tokenizer.
	Files []File `json:"files"`
	// MergedFrom, for a merged LoRA export, are the adapter's files that
	// were merged into Base to give Files.
	MergedFrom []File `json:"merged_from,omitempty"`

	Base     Model     `json:"base"`
	Datasets []Dataset `json:"datasets"`
	// Spec is the training configuration exactly as the trainer holds it
	// (a job's coordinator.JobSpec as it marshals), and ConfigHash its
	// hash as the trainer computes it.
	Spec       json.RawMessage `json:"spec"`
	ConfigHash string          `json:"config_hash,omitempty"`

	// Epochs are the rings that trained the job, oldest first, with the
	// steps each served. EpochsNote says what is missing, if anything.
	Epochs     []Epoch `json:"epochs,omitempty"`
	EpochsNote string  `json:"epochs_note,omitempty"`
	// Checkpoints are the checkpoint records, oldest first;
	// CheckpointsNote says what is missing (the cluster keeps the newest).
	Checkpoints     []Checkpoint `json:"checkpoints,omitempty"`
	CheckpointsNote string       `json:"checkpoints_note,omitempty"`
	// Steps is the number of optimizer steps the exported weights are
	// after.
	Steps int `json:"steps"`
	// Heldout are held-out losses over the run, by step (step 0: the base
	// model's).
	Heldout []Heldout `json:"heldout,omitempty"`

	// Started and Finished bound the training, as far as it is known;
	// Exported is when the record was made (and signed).
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	Exported time.Time  `json:"exported"`
}

// File is a file by name, size and SHA-256.
type File struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

// Model is a model by name (for people; may be empty) and its files.
type Model struct {
	Name  string `json:"name,omitempty"`
	Files []File `json:"files"`
}

// Dataset is one dataset a model was trained on: what it is, how much, and
// for a federated job which unit held it. Never its content.
type Dataset struct {
	// ID is the dataset's id (the hash of its manifest's content) and
	// Manifest the hash of manifest.json; Name is what people call it.
	ID       string `json:"id,omitempty"`
	Name     string `json:"name"`
	Manifest string `json:"manifest,omitempty"`
	// Holder is the unit (node) that held a local dataset of a federated
	// job: its data never left it.
	Holder string `json:"holder,omitempty"`
	// Documents and Tokens count the prepared input (tokens with the
	// end-of-text markers); TrainSequences and HeldoutSequences the
	// packed sequences of each split. Zero when unknown.
	Documents        int64 `json:"documents,omitempty"`
	Tokens           int64 `json:"tokens,omitempty"`
	TrainSequences   int64 `json:"train_sequences,omitempty"`
	HeldoutSequences int64 `json:"heldout_sequences,omitempty"`
	// Files are the input files of a single-process run (name, SHA-256).
	Files []File `json:"files,omitempty"`
}

// Epoch is a ring of members and the steps it served: FirstStep through
// LastStep (step n is the n-th update).
type Epoch struct {
	Epoch     uint64   `json:"epoch"`
	Members   []string `json:"members"`
	FirstStep int      `json:"first_step"`
	LastStep  int      `json:"last_step"`
}

// Checkpoint is one checkpoint record: the step it was taken after, its
// files' hashes and the hash of the weights in memory (WeightsHash, the
// trainer's, as `braid job status` shows it).
type Checkpoint struct {
	Step        int               `json:"step"`
	WeightsHash string            `json:"weights_hash"`
	Files       map[string]string `json:"files"` // file name → SHA-256
	Holders     []string          `json:"holders,omitempty"`
	At          *time.Time        `json:"at,omitempty"`
}

// Heldout is a held-out loss after Step steps; Unit names the federated
// unit whose own held-out split it is (empty: the job's).
type Heldout struct {
	Step int     `json:"step"`
	Loss float64 `json:"loss"`
	Unit string  `json:"unit,omitempty"`
}

// Errors.
var (
	// ErrBadRecord is wrapped by the errors of Decode.
	ErrBadRecord = errors.New("provenance: bad record")
)

// Encode returns the record's file bytes: indented JSON and a newline.
// These exact bytes are what a signature covers.
func (r *Record) Encode() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("provenance: encoding the record: %w", err)
	}
	return append(b, '\n'), nil
}

// Decode reads a record: one JSON object of a known format with no unknown
// fields, at most MaxRecordBytes. Errors wrap ErrBadRecord and never panic.
func Decode(b []byte) (*Record, error) {
	if len(b) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadRecord, len(b), MaxRecordBytes)
	}
	var r Record
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadRecord, jsonerr.Problem(err))
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrBadRecord)
	}
	if r.Format != FormatVersion {
		return nil, fmt.Errorf("%w: format %d, this braid reads %d", ErrBadRecord, r.Format, FormatVersion)
	}
	if err := validFiles(r.Files); err != nil {
		return nil, fmt.Errorf("%w: files: %v", ErrBadRecord, err)
	}
	if len(r.Files) == 0 {
		return nil, fmt.Errorf("%w: it names no files", ErrBadRecord)
	}
	return &r, nil
}

// validFiles checks that the names are plain file names (safe to join to
// a directory), distinct, and the hashes hex SHA-256.
func validFiles(files []File) error {
	seen := map[string]bool{}
	for _, f := range files {
		if f.Name == "" || f.Name != filepath.Base(f.Name) || f.Name == "." || f.Name == ".." || strings.ContainsAny(f.Name, `/\`) {
			return fmt.Errorf("file name %.80q is not a plain file name", f.Name)
		}
		if seen[f.Name] {
			return fmt.Errorf("file %s listed twice", f.Name)
		}
		seen[f.Name] = true
		if !validHash(f.SHA256) {
			return fmt.Errorf("file %s: sha256 %.80q is not 64 lowercase hex digits", f.Name, f.SHA256)
		}
	}
	return nil
}

func validHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// HashFile returns the file's hex SHA-256 and size. It hashes only a
// regular file (safefile.Open: a FIFO or a device is refused, without
// blocking on the open); a symbolic link is followed.
func HashFile(path string) (File, error) {
	f, _, err := safefile.Open(path, math.MaxInt64)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return File{}, fmt.Errorf("provenance: hashing %s: %w", path, err)
	}
	return File{Name: filepath.Base(path), SHA256: hex.EncodeToString(h.Sum(nil)), Bytes: n}, nil
}

// HashFiles hashes the named files of dir, sorted by name.
func HashFiles(dir string, names []string) ([]File, error) {
	out := make([]File, 0, len(names))
	for _, name := range slices.Sorted(slices.Values(names)) {
		f, err := HashFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// SortFiles sorts files by name, in place, and returns them.
func SortFiles(files []File) []File {
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	return files
}
