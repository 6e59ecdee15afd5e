package model_test

// Checkpoints as published: bfloat16 weights in Hugging Face shards
// (testdata/hf_tiny_bf16_sharded, written by scripts/gen_sharded.py), read
// and written back in the dtype and layout they came in.

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
)

const shardedBF16 = "testdata/hf_tiny_bf16_sharded"

// TestShardedBF16GivesPyTorchLogits: a bfloat16 checkpoint in three shards
// loads as it is, its weights are hf_tiny's rounded to bfloat16 exactly as
// torch rounds them, and it gives PyTorch's logits of those weights.
func TestShardedBF16GivesPyTorchLogits(t *testing.T) {
	tokens, B, T, want := readHFRef(t, shardedBF16)
	ck, err := model.LoadCheckpoint(shardedBF16)
	if err != nil {
		t.Fatal(err)
	}
	// The largest shard holds 53696 bytes of data (the limit it was
	// written with, 54272, is not recorded).
	if ck.Format.Dtype != safetensors.BF16 || ck.Format.MaxShardBytes != 53696 {
		t.Errorf("Format %+v, want BF16 with shards of at most 53696 bytes (the largest shard's)", ck.Format)
	}
	f32, err := model.LoadCheckpoint("testdata/hf_tiny")
	if err != nil {
		t.Fatal(err)
	}
	if f32.Format != (model.WeightsFormat{Dtype: safetensors.F32}) {
		t.Errorf("hf_tiny Format %+v, want F32 in one file", f32.Format)
	}
	for i, v := range f32.Params {
		if want := safetensors.BF16ToFloat32(safetensors.BF16FromFloat32(v)); math.Float32bits(ck.Params[i]) != math.Float32bits(want) {
			t.Fatalf("param %d: %v, hf_tiny's %v rounded to bfloat16 is %v", i, ck.Params[i], v, want)
		}
	}
	m, err := model.NewInference(ck.Config, B, T)
	if err != nil {
		t.Fatal(err)
	}
	copy(m.Params, ck.Params)
	for _, impl := range kernels.Implementations() {
		t.Run(impl.String(), func(t *testing.T) {
			defer kernels.SetImpl(kernels.SetImpl(impl))
			if _, err := m.Forward(tokens, nil, B, T); err != nil {
				t.Fatal(err)
			}
			d, maxw := maxAbsDiff(m.Logits(), want)
			t.Logf("logits (%d, %d, %d) max abs diff %.2e (max |logit| %.2f)", B, T, m.Config.Vocab, d, maxw)
			if !(d <= hfTol) {
				t.Errorf("logits differ from PyTorch by %.3g > %g", d, hfTol)
			}
		})
	}
}

// TestShardedBF16WritesBackAsItCame: saved in the format it was read in, a
// bfloat16 sharded checkpoint comes back bfloat16 and sharded, every
// parameter's bytes as they were, and reloads bitwise.
func TestShardedBF16WritesBackAsItCame(t *testing.T) {
	ck, err := model.LoadCheckpoint(shardedBF16)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := model.SaveCheckpointAs(dir, ck.Config, ck.Tokenizer, ck.Params, ck.Format); err != nil {
		t.Fatal(err)
	}
	src, err := safetensors.ReadDir(shardedBF16)
	if err != nil {
		t.Fatal(err)
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("written back as %v", set.Files())
	if set.Index == nil || len(set.Files()) < 2 {
		t.Errorf("written as %v, want shards and an index", set.Files())
	}
	if set.MaxShardBytes() > ck.Format.MaxShardBytes {
		t.Errorf("largest shard %d bytes, more than the %d asked", set.MaxShardBytes(), ck.Format.MaxShardBytes)
	}
	got, err := safetensors.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range got.Tensors {
		y, ok := src.Tensor(x.Name)
		if !ok {
			t.Errorf("braid wrote %s, which the source lacks", x.Name)
			continue
		}
		if x.Dtype != safetensors.BF16 || !bytes.Equal(x.Data, y.Data) {
			t.Errorf("%s: %s written back differs from the source's %s", x.Name, x.Dtype, y.Dtype)
		}
	}
	if cfg := readJSON(t, filepath.Join(dir, model.ConfigFile)); cfg["torch_dtype"] != "bfloat16" {
		t.Errorf("config.json torch_dtype %v, want bfloat16", cfg["torch_dtype"])
	}
	again, err := model.LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ck.Params {
		if math.Float32bits(again.Params[i]) != math.Float32bits(ck.Params[i]) {
			t.Fatalf("param %d: %v after save and reload, want %v", i, again.Params[i], ck.Params[i])
		}
	}
	if again.Format.Dtype != safetensors.BF16 || again.Format.MaxShardBytes == 0 {
		t.Errorf("reloaded Format %+v, want BF16 sharded", again.Format)
	}
}

// Each format round-trips: the parameters come back rounded to the dtype
// (exactly, for F32), in the layout asked for, and Format says what was
// read.
func TestSaveCheckpointAsFormats(t *testing.T) {
	_, m := savedTiny(t)
	round := map[safetensors.Dtype]func(float32) float32{
		safetensors.F32:  func(v float32) float32 { return v },
		safetensors.F16:  func(v float32) float32 { return safetensors.F16ToFloat32(safetensors.F16FromFloat32(v)) },
		safetensors.BF16: func(v float32) float32 { return safetensors.BF16ToFloat32(safetensors.BF16FromFloat32(v)) },
	}
	for _, f := range []model.WeightsFormat{
		{Dtype: safetensors.F16},
		{Dtype: safetensors.BF16},
		{Dtype: safetensors.F32, MaxShardBytes: 20000},
		{Dtype: safetensors.BF16, MaxShardBytes: 10000},
	} {
		dir := t.TempDir()
		if err := model.SaveCheckpointAs(dir, m.Config, model.ByteTokenizer{}, m.Params, f); err != nil {
			t.Fatal(err)
		}
		ck, err := model.LoadCheckpoint(dir)
		if err != nil {
			t.Fatal(err)
		}
		// A tensor larger than the limit has a shard of its own, so the
		// largest shard read back may exceed the limit written with.
		if ck.Format.Dtype != f.Dtype || (ck.Format.MaxShardBytes == 0) != (f.MaxShardBytes == 0) {
			t.Errorf("saved as %+v, read back as %+v", f, ck.Format)
		}
		for i, v := range m.Params {
			if want := round[f.Dtype](v); math.Float32bits(ck.Params[i]) != math.Float32bits(want) {
				t.Fatalf("%+v: param %d = %v, want %v", f, i, ck.Params[i], want)
			}
		}
		t.Logf("%+v: %d files", f, len(mustList(t, dir)))
	}
	if err := model.SaveCheckpointAs(t.TempDir(), m.Config, model.ByteTokenizer{}, m.Params, model.WeightsFormat{Dtype: safetensors.F64}); err == nil || !strings.Contains(err.Error(), "F64") {
		t.Errorf("SaveCheckpointAs(F64) = %v, want an error naming the dtype", err)
	}
}

func mustList(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// TestShardedBadCheckpoint: problems in a sharded checkpoint are
// ErrCheckpoint errors naming the shard and the tensor.
func TestShardedBadCheckpoint(t *testing.T) {
	const shard2 = "model-00002-of-00003.safetensors"
	// copySharded copies the fixture into a temporary directory.
	copySharded := func(t *testing.T) string {
		t.Helper()
		dir := t.TempDir()
		for _, e := range mustList(t, shardedBF16) {
			b, err := os.ReadFile(filepath.Join(shardedBF16, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	// editShard rewrites one shard with the tensors edit returns and
	// returns the name of the tensor edit changes: the first that match
	// picks.
	editShard := func(t *testing.T, dir string, pick func(name string) bool, edit func([]safetensors.Tensor, int) []safetensors.Tensor) string {
		t.Helper()
		path := filepath.Join(dir, shard2)
		f := mustRead(t, path)
		i := slices.IndexFunc(f.Tensors, func(x safetensors.Tensor) bool { return pick(x.Name) })
		if i < 0 {
			t.Fatalf("%s holds no tensor to edit", shard2)
		}
		name := f.Tensors[i].Name
		if err := safetensors.WriteFile(path, edit(f.Tensors, i), f.Metadata); err != nil {
			t.Fatal(err)
		}
		return name
	}
	first := func(string) bool { return true }
	cases := []struct {
		name    string
		corrupt func(t *testing.T, dir string) (tensor string)
		want    []string
	}{
		{"a tensor missing from its shard", func(t *testing.T, dir string) string {
			return editShard(t, dir, first, func(ts []safetensors.Tensor, i int) []safetensors.Tensor { return slices.Delete(ts, i, i+1) })
		}, []string{shard2, "missing"}},
		{"a parameter of another shape", func(t *testing.T, dir string) string {
			return editShard(t, dir, func(name string) bool { return strings.HasSuffix(name, "c_fc.weight") },
				func(ts []safetensors.Tensor, i int) []safetensors.Tensor {
					ts[i].Shape = []int{ts[i].Shape[1], ts[i].Shape[0]}
					return ts
				})
		}, []string{shard2, "shape"}},
		{"an integer parameter", func(t *testing.T, dir string) string {
			return editShard(t, dir, func(name string) bool { return strings.HasSuffix(name, "_fc.bias") },
				func(ts []safetensors.Tensor, i int) []safetensors.Tensor {
					ts[i].Dtype = safetensors.I16
					return ts
				})
		}, []string{shard2, "dtype I16"}},
		{"a shard escaping the directory", func(t *testing.T, dir string) string {
			path := filepath.Join(dir, safetensors.IndexFile)
			b, _ := os.ReadFile(path)
			os.WriteFile(path, bytes.Replace(b, []byte(`"`+shard2), []byte(`"../`+shard2), 1), 0o644)
			return ""
		}, []string{safetensors.IndexFile, "../" + shard2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copySharded(t)
			tensor := c.corrupt(t, dir)
			_, err := model.LoadCheckpoint(dir)
			if !errors.Is(err, model.ErrCheckpoint) {
				t.Fatalf("LoadCheckpoint = %v, want ErrCheckpoint", err)
			}
			for _, w := range append(c.want, tensor) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			t.Log(err)
		})
	}
}

// TestLoadCheckpointStreams: loading a sharded checkpoint allocates the
// float32 parameters and a few tensors' worth more, not the files' bytes
// on top.
func TestLoadCheckpointStreams(t *testing.T) {
	c := model.Config{Vocab: 300, Context: 16, Dim: 256, Layers: 8, Heads: 4}
	m, err := model.New(c, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	dir := t.TempDir()
	if err := model.SaveCheckpointAs(dir, c, model.ByteTokenizer{}, m.Params, model.WeightsFormat{Dtype: safetensors.BF16, MaxShardBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ck, err := model.LoadCheckpoint(dir)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	paramBytes := 4 * uint64(len(ck.Params))
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d parameters (%.1f MiB as float32) in %d shards of %.1f MiB of bf16 in all: LoadCheckpoint allocated %.1f MiB",
		len(ck.Params), float64(paramBytes)/(1<<20), len(set.Files()), float64(set.DataBytes())/(1<<20), float64(allocated)/(1<<20))
	// The parameters, one float32 scratch copy and one stored (bf16) copy
	// of the largest tensor (1.5 MiB), the read buffer (1 MiB) and small
	// change (headers, layouts): less than half the files' bytes on top of
	// the parameters, where holding the files would take all of them.
	if limit := paramBytes + uint64(set.DataBytes())/2; allocated > limit {
		t.Errorf("LoadCheckpoint allocated %d bytes, more than the parameters and half the files (%d)", allocated, limit)
	}
}
