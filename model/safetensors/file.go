package safetensors

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
)

// ReadFile reads and decodes the safetensors file at path. Errors name the
// path and wrap the underlying I/O error or the Decode sentinel. The returned
// tensors own their data.
func ReadFile(path string) (*File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err // *fs.PathError already names the path
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("safetensors: %s is not a regular file", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err // *fs.PathError already names the path
	}
	f, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// WriteFile encodes tensors and metadata as Encode does and replaces path
// atomically: it writes a temporary file in the same directory, syncs it,
// renames it over path and syncs the directory. On an error before the
// rename, path is left as it was and the temporary file is removed; if only
// the final directory sync fails, path already holds the complete new file. The file is created with mode
// 0644. Errors name the path.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	// Validate before touching the file system.
	if _, _, err := encodeHeader(tensors, metadata); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := writeTemp(dir, base, path, tensors, metadata); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("safetensors: write %s: sync directory: %w", path, err)
	}
	return nil
}

// writeTemp writes the encoded file to a synced temporary file in dir and
// renames it to path, removing the temporary file on any error.
func writeTemp(dir, base, path string, tensors []Tensor, metadata map[string]string) (err error) {
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err := Encode(w, tensors, metadata); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// syncDir makes a rename in dir durable.
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
