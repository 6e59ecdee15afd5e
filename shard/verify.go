package shard

import (
	"errors"
	"fmt"
	"os"
)

// Problem is a shard that failed verification.
type Problem struct {
	Hash string
	Path string
	Err  error // wraps ErrMissing, ErrTruncated, ErrHashMismatch, ErrBadHeader, ErrBadPayload or ErrMismatch
}

func (p Problem) String() string { return p.Err.Error() }

// Report is the outcome of Verify.
type Report struct {
	Manifest *Manifest
	Checked  int       // distinct shard files checked
	Problems []Problem // one per bad shard, in manifest order
}

// OK reports whether every shard is good.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Verify checks a dataset directory: the manifest, and every shard it
// lists — present, as long as the manifest says, named by its SHA-256,
// with a good header that agrees with the manifest and a payload that
// passes its checksum. A manifest that cannot be read is an error; bad
// shards are listed in the report, each once, naming the file and what is
// wrong.
func Verify(dir string) (*Report, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	r := &Report{Manifest: m}
	seen := map[string]bool{}
	for _, e := range m.Shards {
		if seen[e.Hash] {
			continue // the same content listed twice is one file
		}
		seen[e.Hash] = true
		r.Checked++
		if err := verifyShard(m, e, ShardPath(dir, e.Hash)); err != nil {
			r.Problems = append(r.Problems, Problem{Hash: e.Hash, Path: ShardPath(dir, e.Hash), Err: err})
		}
	}
	return r, nil
}

func verifyShard(m *Manifest, e ShardEntry, path string) error {
	file, err := readFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s: %w", path, ErrMissing)
	case err != nil:
		return fmt.Errorf("shard: %w", err)
	}
	return VerifyEntry(m, e, file, path)
}
