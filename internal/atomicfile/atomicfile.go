// Package atomicfile replaces files so that a reader, or a crash, sees
// either the old content or all of the new, never a mix: the new content
// goes to a temporary file in the same directory, which is fsynced and
// renamed over the target, and then the directory is fsynced.
//
// It is braid's one implementation of that sequence (checkpoints,
// safetensors files, certificates and keys all use it). Stage and Commit
// split Write in two for callers that replace several files together; each
// file is still replaced atomically, the set as a whole is not: such
// callers order their commits so that a reader never takes a half-replaced
// set for a whole one (safetensors.WriteDir commits the index last).
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ErrSyncDir is wrapped by the error Write returns when everything but the
// final directory fsync succeeded: path already holds the complete new
// file, but the rename may not survive a power cut. Some callers treat
// that as success (some file systems refuse to sync a directory).
var ErrSyncDir = errors.New("atomicfile: sync directory")

// Write replaces path with what write produces, with mode perm. On an error
// before the rename, path is left as it was and no temporary file remains.
// Errors are returned unwrapped except for ErrSyncDir; callers add the path.
func Write(path string, perm os.FileMode, write func(io.Writer) error) error {
	p, err := Stage(path, perm, write)
	if err != nil {
		return err
	}
	if err := p.Commit(); err != nil {
		return err
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("%w: %v", ErrSyncDir, err)
	}
	return nil
}

// Pending is a file written in full and fsynced under a temporary name in
// its target's directory, not yet in place: the first half of Write, for
// callers that replace several files together (a sharded checkpoint) and
// must not touch any target until every file is written. Commit or Abort
// it exactly once. A Pending is not safe for concurrent use.
type Pending struct {
	tmp, path string
}

// Stage writes what write produces, with mode perm, to a new temporary file
// beside path (a dot-name that starts with path's base name), fsyncs and
// closes it. path itself is not touched. On error no temporary file remains.
func Stage(path string, perm os.FileMode, write func(io.Writer) error) (_ *Pending, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return nil, err
	}
	if err = write(tmp); err != nil {
		return nil, err
	}
	if err = tmp.Sync(); err != nil {
		return nil, err
	}
	if err = tmp.Close(); err != nil {
		return nil, err
	}
	return &Pending{tmp: tmp.Name(), path: path}, nil
}

// Commit renames the staged file over its path. It does not fsync the
// directory: call SyncDir once after the last Commit for the renames to
// survive a power cut. On error the temporary file is removed.
func (p *Pending) Commit() error {
	if err := os.Rename(p.tmp, p.path); err != nil {
		os.Remove(p.tmp)
		return err
	}
	return nil
}

// Abort removes the staged file; path is left as it was.
func (p *Pending) Abort() error { return os.Remove(p.tmp) }

// WriteBytes is Write for content already in memory.
func WriteBytes(path string, data []byte, perm os.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// SyncDir fsyncs a directory, making the renames and removals in it
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}
