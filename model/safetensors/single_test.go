package safetensors

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// WriteSingle of a sharded set (torch's bf16 shards and WriteDir's) is one
// file holding the same tensors byte for byte, SingleSize long, the same on
// every call; of a single file too.
func TestWriteSingle(t *testing.T) {
	for _, dir := range []string{filepath.Join("..", "testdata", "hf_tiny_bf16_sharded"), threeShards(t), filepath.Join("..", "testdata", "hf_tiny")} {
		s, err := OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var b, again bytes.Buffer
		if err := s.WriteSingle(&b); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteSingle(&again); err != nil || !bytes.Equal(b.Bytes(), again.Bytes()) {
			t.Errorf("%s: a second WriteSingle differs (%v)", dir, err)
		}
		if size, err := s.SingleSize(); err != nil || size != int64(b.Len()) {
			t.Errorf("%s: SingleSize %d, %v; wrote %d bytes", dir, size, err, b.Len())
		}
		got, err := Decode(b.Bytes())
		if err != nil {
			t.Fatalf("%s: WriteSingle wrote what Decode refuses: %v", dir, err)
		}
		if len(got.Tensors) != len(want.Tensors) || got.Metadata["format"] != want.Metadata["format"] {
			t.Fatalf("%s: %d tensors, metadata %v; the set has %d, %v", dir, len(got.Tensors), got.Metadata, len(want.Tensors), want.Metadata)
		}
		for i, w := range want.Tensors {
			g := got.Tensors[i]
			if g.Name != w.Name || g.Dtype != w.Dtype || !slices.Equal(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
				t.Errorf("%s: tensor %d is %s %s %v, the set's %s %s %v", dir, i, g.Name, g.Dtype, g.Shape, w.Name, w.Dtype, w.Shape)
			}
		}
	}
}

// WriteSingle refuses a shard changed since OpenDir, as Each does.
func TestWriteSingleRefusesAChangedShard(t *testing.T) {
	dir := threeShards(t)
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ts := sixTensors()
	ts[4].Name = "g"
	if err := WriteFile(filepath.Join(dir, shard3), ts[4:], map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSingle(&bytes.Buffer{}); !errors.Is(err, ErrSet) || !strings.Contains(err.Error(), shard3) {
		t.Errorf("WriteSingle = %v, want ErrSet naming %s", err, shard3)
	}
}
