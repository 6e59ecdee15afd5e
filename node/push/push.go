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
// receives again and refuses bytes that changed in between. (A sharded
// model's shards are the exception: they are sent as one object, read
// twice — see Model.) Objects the node already holds are not sent again,
// so a push that failed half-way is resumed by running it again.
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
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
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

// errStopped ends the writing of an object that Put stopped reading.
var errStopped = errors.New("push: the target stopped reading")

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

// Model pushes a model directory as a job's base: config.json, the
// weights and the files of its tokenizer, each as an object, and returns
// the ModelRef that names them. It reads the directory as
// model.LoadCheckpoint does, and checks it before it sends anything:
//
//   - the tokenizer is the one model.DecodeConfigFiles chooses from
//     config.json and the tokenizer files the directory has
//     (model.TokenizerFiles: a Hugging Face tokenizer.json, ...); only the
//     files it was read from are sent (ModelRef.Tokenizer), none for a
//     built-in tokenizer;
//   - the weights are model.safetensors or the shards that
//     model.safetensors.index.json lists (every header is read and checked
//     by safetensors.OpenDir). Shards are sent as one safetensors object
//     holding their tensors exactly as stored, in their dtypes
//     (safetensors.Set.WriteSingle): a node reads one weights object,
//     whatever the layout on the client.
//
// config.json, the tokenizer files, model.safetensors and the index may be
// symbolic links (a download cache's): they are followed, and what they
// reach must be a regular file within its limit (model.MaxConfigBytes,
// model.MaxTokenizerFileBytes, model.MaxWeightsBytes); a shard may not be
// a link (safetensors.OpenDir).
//
// Memory: config.json and the tokenizer files are held (within their
// limits); weights never are. A sharded set is read twice, tensor by
// tensor (one buffer of its largest tensor): once to hash the object, and
// once more to send it unless the node holds it already.
func Model(ctx context.Context, t Target, dir string) (coordinator.ModelRef, Result, error) {
	var ref coordinator.ModelRef
	var r Result
	path := filepath.Join(dir, model.ConfigFile)
	cb, err := safefile.ReadFile(path, model.MaxConfigBytes)
	if err != nil {
		return ref, r, fmt.Errorf("push: base model: %w", err)
	}
	files := map[string][]byte{}
	for _, name := range model.TokenizerFiles() {
		b, err := safefile.ReadFile(filepath.Join(dir, name), model.MaxTokenizerFileBytes(name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return ref, r, fmt.Errorf("push: base model: %w", err)
		}
		files[name] = b
	}
	_, tok, err := model.DecodeConfigFiles(cb, path, files)
	if err != nil {
		return ref, r, fmt.Errorf("push: base model: %w", err)
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return ref, r, fmt.Errorf("push: base model: %w", err)
	}
	if set.Index == nil {
		ref.Weights, err = sendWeightsFile(ctx, t, filepath.Join(dir, model.WeightsFile), &r)
	} else {
		ref.Weights, err = sendSet(ctx, t, set, &r)
	}
	if err != nil {
		return ref, r, err
	}
	if ft, ok := tok.(model.FileTokenizer); ok {
		ref.Tokenizer = map[string]string{}
		for _, name := range slices.Sorted(maps.Keys(ft.Files())) {
			b := ft.Files()[name]
			if err := sendBytes(ctx, t, b, false, &r); err != nil {
				return ref, r, fmt.Errorf("push: base model %s: %w", filepath.Join(dir, name), err)
			}
			ref.Tokenizer[name] = sum(b)
		}
	}
	ref.Config = sum(cb)
	if err := sendBytes(ctx, t, cb, false, &r); err != nil {
		return ref, r, fmt.Errorf("push: base model %s: %w", path, err)
	}
	return ref, r, nil
}

// sendWeightsFile sends a model.safetensors from one descriptor (see send).
func sendWeightsFile(ctx context.Context, t Target, path string, r *Result) (string, error) {
	f, size, err := safefile.Open(path, model.MaxWeightsBytes)
	if err != nil {
		return "", fmt.Errorf("push: base model: %w", err)
	}
	defer f.Close()
	return send(ctx, t, f, size, "", false, r)
}

// sendSet sends a sharded set of weights as one safetensors object
// (Set.WriteSingle), hashed on a first pass over the shards and sent on a
// second unless the node holds it. A shard changed in between makes the
// second pass fail (the set's check) or the node refuse the bytes (their
// hash).
func sendSet(ctx context.Context, t Target, set *safetensors.Set, r *Result) (string, error) {
	name := filepath.Join(set.Dir, safetensors.IndexFile)
	size, err := set.SingleSize()
	if err != nil {
		return "", fmt.Errorf("push: base model %s: %w", name, err)
	}
	if size > model.MaxWeightsBytes {
		return "", fmt.Errorf("push: base model %s: %d bytes of weights, more than the %d a base may have", name, size, int64(model.MaxWeightsBytes))
	}
	hh := sha256.New()
	if err := set.WriteSingle(hh); err != nil {
		return "", fmt.Errorf("push: base model: %w", err)
	}
	h := hex.EncodeToString(hh.Sum(nil))
	r.Objects++
	if has, err := t.Has(ctx, h); err != nil {
		return "", fmt.Errorf("push: %s: %w", name, err)
	} else if has {
		return h, nil
	}
	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		err := set.WriteSingle(pw)
		pw.CloseWithError(err)
		written <- err
	}()
	err = t.Put(ctx, h, size, pr, false)
	pr.CloseWithError(errStopped) // unblocks the writer if Put returned before reading it all
	if werr := <-written; werr != nil && !errors.Is(werr, errStopped) {
		return "", fmt.Errorf("push: base model: %w", werr) // Put failed for it
	}
	if err != nil {
		return "", fmt.Errorf("push: %s: %w", name, err)
	}
	r.Sent++
	r.Bytes += size
	return h, nil
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
