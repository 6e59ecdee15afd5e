// Package push sends a prepared dataset, or a model directory, from the
// client's machine to a node: the client reads its files and sends each
// one as an object named by its SHA-256, so that a node never opens a path
// a client names, with the node's privileges (SECURITY.md). The caller then
// names the objects by hash (POST /v1/datasets with Result.Manifest, POST
// /v1/jobs with the ModelRef).
//
// Every file is opened once (internal/safefile): it must be a regular file
// within a size limit, so /dev/zero, a FIFO or a directory is refused
// before a byte is read, and a dataset's files (which `braid data prepare`
// never writes as links) are not followed if they are symbolic links. A
// file is hashed from that one descriptor before anything is sent — a
// shard must hash to its name and be as long as the manifest says, so a
// file swapped for another after the directory was listed is refused here
// — and is then sent from the same descriptor; the node hashes what it
// receives again and refuses bytes that changed in between. Objects the
// node already holds are not sent again, so a push that failed half-way is
// resumed by running it again.
//
// What it does not do: speak HTTP (a Target does: the CLI's sends over the
// node's API, node/nodetest's calls a node in process), register the
// dataset or submit the job, or verify a shard's payload (the node does,
// from its store, before it registers the dataset).
package push

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/shard"
)

// Target is a node's store, as a client reaches it.
type Target interface {
	// Has reports whether the node holds object hash.
	Has(ctx context.Context, hash string) (bool, error)
	// Put sends object hash: size bytes, read from r. private asks the
	// node to mark it private before it stores a byte (a local dataset's).
	// The node refuses bytes that do not hash to hash.
	Put(ctx context.Context, hash string, size int64, r io.Reader, private bool) error
}

// ErrChanged: a file's bytes are not those its name or the manifest
// promise (it was replaced, or changed, after the directory was written).
var ErrChanged = errors.New("push: the file is not what the dataset lists")

// Result says what a push sent.
type Result struct {
	// Manifest is the hash of the dataset's manifest.json object (Dataset
	// only), and Dataset the manifest as it was sent.
	Manifest string
	Dataset  *shard.Manifest
	// Objects counts the distinct objects pushed; Sent those the node did
	// not hold yet, and Bytes their bytes.
	Objects, Sent int
	Bytes         int64
}

// Dataset pushes the dataset prepared in dir (`braid data prepare`): every
// distinct shard its manifest lists, then the manifest. private marks
// every object private on the node before it is stored (`braid data
// register --local`). Errors name the file and what is wrong with it.
func Dataset(ctx context.Context, t Target, dir string, private bool) (Result, error) {
	var r Result
	path := filepath.Join(dir, shard.ManifestName)
	mb, err := safefile.ReadFileNoFollow(path, shard.MaxManifestBytes)
	if err != nil {
		return r, fmt.Errorf("push: manifest: %w", err)
	}
	m, err := shard.DecodeManifest(mb)
	if err != nil {
		return r, fmt.Errorf("push: %s: %w", path, err)
	}
	r.Dataset = m
	seen := map[string]bool{}
	for _, e := range m.Shards {
		if seen[e.Hash] {
			continue
		}
		seen[e.Hash] = true
		p := shard.ShardPath(dir, e.Hash)
		f, size, err := safefile.OpenNoFollow(p, e.Bytes)
		if err != nil {
			return r, fmt.Errorf("push: shard: %w", err)
		}
		if size != e.Bytes {
			f.Close()
			return r, fmt.Errorf("push: %s: %w: %d bytes, the manifest says %d", p, ErrChanged, size, e.Bytes)
		}
		_, err = send(ctx, t, f, size, e.Hash, private, &r)
		f.Close()
		if err != nil {
			return r, err
		}
	}
	r.Manifest = sum(mb)
	if err := sendBytes(ctx, t, mb, private, &r); err != nil {
		return r, fmt.Errorf("push: manifest of %s: %w", dir, err)
	}
	return r, nil
}

// Model pushes a model directory's config.json and model.safetensors (a
// Hugging Face GPT-2 layout, as `braid train` and `braid job export`
// write): the config is decoded here first, so a directory that is not a
// model fails before its weights are sent. Its files may be symbolic links
// (a download cache's): they are followed, and what they reach must be
// regular files within model.MaxConfigBytes and model.MaxWeightsBytes.
func Model(ctx context.Context, t Target, dir string) (coordinator.ModelRef, Result, error) {
	var ref coordinator.ModelRef
	var r Result
	path := filepath.Join(dir, model.ConfigFile)
	cb, err := safefile.ReadFile(path, model.MaxConfigBytes)
	if err != nil {
		return ref, r, fmt.Errorf("push: base model: %w", err)
	}
	if _, _, err := model.DecodeConfig(cb, path); err != nil {
		return ref, r, fmt.Errorf("push: base model: %w", err)
	}
	wpath := filepath.Join(dir, model.WeightsFile)
	f, size, err := safefile.Open(wpath, model.MaxWeightsBytes)
	if err != nil {
		return ref, r, fmt.Errorf("push: base model: %w", err)
	}
	defer f.Close()
	if ref.Weights, err = send(ctx, t, f, size, "", false, &r); err != nil {
		return ref, r, err
	}
	ref.Config = sum(cb)
	if err := sendBytes(ctx, t, cb, false, &r); err != nil {
		return ref, r, fmt.Errorf("push: base model %s: %w", path, err)
	}
	return ref, r, nil
}

// send hashes the size bytes of f, checks them against want (when not
// empty), and sends them from the same descriptor unless the node holds
// them. It returns their hash.
func send(ctx context.Context, t Target, f *os.File, size int64, want string, private bool, r *Result) (string, error) {
	hh := sha256.New()
	n, err := io.Copy(hh, io.NewSectionReader(f, 0, size))
	if err != nil {
		return "", fmt.Errorf("push: reading %s: %w", f.Name(), err)
	}
	if n != size {
		return "", fmt.Errorf("push: %s: %w: it shrank from %d to %d bytes while it was read", f.Name(), ErrChanged, size, n)
	}
	h := hex.EncodeToString(hh.Sum(nil))
	if want != "" && h != want {
		return "", fmt.Errorf("push: %s: %w: its bytes hash to %.12s, not to its name", f.Name(), ErrChanged, h)
	}
	r.Objects++
	if has, err := t.Has(ctx, h); err != nil {
		return "", fmt.Errorf("push: %s: %w", f.Name(), err)
	} else if has && !private {
		return h, nil
	}
	// A private object already held is sent with private=1 all the same:
	// the node marks it without reading the body.
	if err := t.Put(ctx, h, size, io.NewSectionReader(f, 0, size), private); err != nil {
		return "", fmt.Errorf("push: %s: %w", f.Name(), err)
	}
	r.Sent++
	r.Bytes += size
	return h, nil
}

// sendBytes sends b unless the node holds it.
func sendBytes(ctx context.Context, t Target, b []byte, private bool, r *Result) error {
	h := sum(b)
	r.Objects++
	if has, err := t.Has(ctx, h); err != nil {
		return err
	} else if has && !private {
		return nil
	}
	if err := t.Put(ctx, h, int64(len(b)), bytesReader(b), private); err != nil {
		return err
	}
	r.Sent++
	r.Bytes += int64(len(b))
	return nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
