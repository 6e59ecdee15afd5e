package safetensors

import (
	"fmt"
	"io"
)

// A Set written as one file: a sharded checkpoint sent where one
// SingleFile is expected, without holding more than one tensor in memory.

// singleHeader is the header WriteSingle writes: every tensor of the set in
// the order of s.Tensors, laid out in that order, and the set's Metadata.
func (s *Set) singleHeader() ([]byte, error) {
	var tensors []Tensor
	var sizes []int
	for _, f := range s.files {
		for k, t := range f.tensors {
			t.Data = nil
			tensors = append(tensors, t)
			sizes = append(sizes, f.spans[k].end-f.spans[k].begin)
		}
	}
	order := make([]int, len(tensors))
	for i := range order {
		order[i] = i
	}
	return layoutHeader(tensors, order, func(i int) int { return sizes[i] }, s.Metadata())
}

// SingleSize returns the number of bytes WriteSingle writes.
func (s *Set) SingleSize() (int64, error) {
	h, err := s.singleHeader()
	if err != nil {
		return 0, err
	}
	return 8 + int64(len(h)) + s.DataBytes(), nil
}

// WriteSingle writes the set to w as one safetensors file: every tensor's
// name, dtype, shape and bytes as the set holds them (no conversion), in
// the order of s.Tensors, and the set's Metadata. Decoded, it holds the
// tensors the set holds. The bytes are a function of the set's files alone:
// two calls on unchanged files write the same bytes.
//
// It reads the tensors with Each, one at a time, so it holds one buffer as
// large as the largest tensor, not a shard; like Each, it refuses a file
// that changed since OpenDir (ErrSet). On an error, what was written to w
// is incomplete.
func (s *Set) WriteSingle(w io.Writer) error {
	h, err := s.singleHeader()
	if err != nil {
		return err
	}
	if err := writeHeader(w, h); err != nil {
		return err
	}
	return s.Each(func(t *Tensor) error {
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("safetensors: writing tensor %q: %w", t.Name, err)
		}
		return nil
	})
}
