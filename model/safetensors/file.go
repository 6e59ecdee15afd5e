package safetensors

import (
	"bufio"
	"fmt"
	"io"

	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/internal/safefile"
)

// MaxFileBytes bounds what ReadFile reads.
const MaxFileBytes = 64 << 30

// ReadFile reads and decodes the safetensors file at path, which must be a
// regular file of at most MaxFileBytes, opened once (internal/safefile).
// Errors name the path and wrap the underlying I/O error, a safefile
// sentinel or the Decode sentinel. The returned tensors own their data.
func ReadFile(path string) (*File, error) {
	b, err := safefile.ReadFile(path, MaxFileBytes)
	if err != nil {
		return nil, err // names the path
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
	err := atomicfile.Write(path, 0o644, func(f io.Writer) error {
		w := bufio.NewWriterSize(f, 1<<20)
		if err := Encode(w, tensors, metadata); err != nil {
			return err
		}
		return w.Flush()
	})
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	return nil
}
