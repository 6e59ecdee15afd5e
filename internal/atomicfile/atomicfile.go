// Package atomicfile replaces files so that a reader, or a crash, sees
// either the old content or all of the new, never a mix: the new content
// goes to a temporary file in the same directory, which is fsynced and
// renamed over the target, and then the directory is fsynced.
//
// It is braid's one implementation of that sequence (checkpoints,
// safetensors files, certificates and keys all use it).
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
func Write(path string, perm os.FileMode, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if err = write(tmp); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if serr := syncDir(dir); serr != nil {
		return fmt.Errorf("%w: %v", ErrSyncDir, serr)
	}
	return nil
}

// WriteBytes is Write for content already in memory.
func WriteBytes(path string, data []byte, perm os.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

func syncDir(dir string) error {
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
