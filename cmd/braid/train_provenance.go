package main

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/provenance"
	"github.com/braidml/braid/train"
)

// The provenance record of a single-process `braid train` run: the same
// record as a cluster job's export (package provenance), with the input
// files as its dataset, written beside the checkpoint at every save.
// Unsigned unless --sign-key and --sign-cert are given (a node's
// certificate and key from `braid ca issue`, or any X.509 pair).

// trainProvenanceFlags are braid train's flags for its record.
func trainProvenanceFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "sign-key", Usage: "sign provenance.json with the private key in `FILE` (PEM; with --sign-cert)"},
		&cli.StringFlag{Name: "sign-cert", Usage: "the certificate of --sign-key, `FILE` (PEM, leaf first): `braid ca issue` writes both"},
	}
}

// trainRecord gathers a run's provenance as it goes: the inputs as they
// are read, the held-out losses as they are measured.
type trainRecord struct {
	started time.Time
	base    provenance.Model
	spec    json.RawMessage
	hash    string
	signer  *tls.Certificate // nil: unsigned

	mu      sync.Mutex // guards inputs and heldout (LoadCorpus calls File on its goroutine)
	inputs  provenance.Dataset
	heldout []provenance.Heldout
}

// newTrainRecord reads the signing pair, if any, so that a bad one fails
// before the run rather than after it.
func newTrainRecord(c *cli.Context) (*trainRecord, error) {
	r := &trainRecord{started: time.Now().UTC().Truncate(time.Millisecond), inputs: provenance.Dataset{Name: "input files"}}
	key, cert := c.String("sign-key"), c.String("sign-cert")
	if (key == "") != (cert == "") {
		return nil, fmt.Errorf("--sign-key and --sign-cert go together: the key signs, the certificate says whose it is")
	}
	if key != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("--sign-key/--sign-cert: %w", err)
		}
		if _, ok := pair.PrivateKey.(crypto.Signer); !ok {
			return nil, fmt.Errorf("--sign-key: a %T key cannot sign", pair.PrivateKey)
		}
		if pair.Leaf == nil {
			if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
				return nil, fmt.Errorf("--sign-cert: %w", err)
			}
		}
		r.signer = &pair
	}
	return r, nil
}

// file is train.CorpusOptions.File: it names and hashes each input file
// read.
func (r *trainRecord) file(path string, text []byte, documents, tokens int) {
	sum := sha256.Sum256(text)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inputs.Files = append(r.inputs.Files, provenance.File{Name: path, SHA256: hex.EncodeToString(sum[:]), Bytes: int64(len(text))})
	r.inputs.Documents += int64(documents)
	r.inputs.Tokens += int64(tokens)
}

// setBase records the model the run starts from: the files of dir (empty
// for a fresh model of preset).
func (r *trainRecord) setBase(dir, preset string) error {
	if dir == "" {
		r.base = provenance.Model{Name: "fresh " + preset + " model (seeded initialisation)", Files: []provenance.File{}}
		return nil
	}
	r.base.Name = filepath.Base(filepath.Clean(dir))
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && (strings.HasSuffix(n, ".safetensors") || strings.HasSuffix(n, ".json") || strings.HasSuffix(n, ".jinja")) &&
			n != provenance.RecordFile && n != train.StateFile {
			names = append(names, n)
		}
	}
	files, err := provenance.HashFiles(dir, names)
	if err != nil {
		return err
	}
	r.base.Files = files
	return nil
}

// setSpec records the run's configuration and its hash (of these bytes).
func (r *trainRecord) setSpec(spec any) error {
	b, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	r.spec, r.hash = b, hex.EncodeToString(sum[:])
	return nil
}

func (r *trainRecord) eval(step int, loss float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.heldout = append(r.heldout, provenance.Heldout{Step: step, Loss: loss})
}

// write writes the record of the files in dir, after step steps, beside
// them (with its signature and model card); mergedFrom, for the merged
// directory, are the adapter's files.
func (r *trainRecord) write(dir string, step int, mergedFrom []provenance.File) ([]provenance.File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		switch n := e.Name(); {
		case !e.Type().IsRegular(), n == provenance.RecordFile, n == provenance.SignatureFile, n == provenance.CardFile:
		default:
			names = append(names, n)
		}
	}
	files, err := provenance.HashFiles(dir, names)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	now := time.Now().UTC().Truncate(time.Millisecond)
	rec := &provenance.Record{Format: provenance.FormatVersion, Kind: provenance.KindTrain, Braid: version, Files: files, MergedFrom: mergedFrom,
		Base: r.base, Datasets: []provenance.Dataset{r.inputs}, Spec: r.spec, ConfigHash: r.hash, Steps: step,
		Heldout: append([]provenance.Heldout(nil), r.heldout...), Started: &r.started, Finished: &now, Exported: now}
	r.mu.Unlock()
	var sig []byte
	if r.signer != nil {
		rec.Signer = r.signer.Leaf.Subject.CommonName
	}
	b, err := rec.Encode()
	if err != nil {
		return nil, err
	}
	if r.signer != nil {
		if sig, err = provenance.Sign(b, r.signer.PrivateKey.(crypto.Signer), r.signer.Certificate); err != nil {
			return nil, err
		}
	}
	return files, provenance.WriteDir(dir, b, sig)
}

// trainSpec is a single-process run's configuration as its record holds
// it.
type trainSpec struct {
	Train  train.Config      `json:"train"`
	Preset string            `json:"preset,omitempty"` // a fresh model's
	Resume string            `json:"resume,omitempty"`
	LoRA   *model.LoRAConfig `json:"lora,omitempty"`
}
