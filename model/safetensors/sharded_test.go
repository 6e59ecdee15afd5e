package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/internal/safefile"
)

// sixTensors are a..f, 16 bytes of data each: with maxShardBytes 32 they
// split into a,b | c,d | e,f.
func sixTensors() []Tensor {
	var ts []Tensor
	for i, name := range []string{"a", "b", "c", "d", "e", "f"} {
		v := float32(i)
		ts = append(ts, F32Tensor(name, []int{4}, []float32{v, v + 0.5, -v, 1 / (v + 1)}))
	}
	return ts
}

const (
	shard1 = "model-00001-of-00003.safetensors"
	shard2 = "model-00002-of-00003.safetensors"
	shard3 = "model-00003-of-00003.safetensors"
)

// threeShards writes sixTensors into a new directory as three shards.
func threeShards(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteDir(dir, sixTensors(), map[string]string{"format": "pt"}, 32); err != nil {
		t.Fatal(err)
	}
	return dir
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// snapshot returns every file of dir and its bytes.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, name := range listDir(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	return out
}

func TestWriteDirReadDirRoundTrip(t *testing.T) {
	md := map[string]string{"format": "pt"}
	var total, largest int64
	for _, x := range sampleTensors() {
		total += int64(len(x.Data))
		largest = max(largest, int64(len(x.Data)))
	}
	tests := []struct {
		name  string
		max   int64
		files int // 1: a single model.safetensors, no index
	}{
		{"no limit", 0, 1},
		{"everything fits", total, 1},
		{"one byte too few", total - 1, 2},
		{"a shard per tensor or two", largest, 5},
		// All but the empty and the one-byte tensor, which share the last.
		{"tensors larger than the limit", 1, len(sampleTensors()) - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			in := sampleTensors()
			if err := WriteDir(dir, in, md, tt.max); err != nil {
				t.Fatal(err)
			}
			s, err := OpenDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("files %v", s.Files())
			want := []string{SingleFile}
			if tt.files > 1 {
				want = nil
				for i := range tt.files {
					want = append(want, shardName(i, tt.files))
				}
				if s.Index == nil || s.Index.TotalSize != total || s.DataBytes() != total {
					t.Errorf("index %+v, data %d bytes; want total_size %d", s.Index, s.DataBytes(), total)
				}
				want = append(want, IndexFile)
			} else if s.Index != nil || s.MaxShardBytes() != 0 {
				t.Errorf("a single file with index %v, MaxShardBytes %d", s.Index, s.MaxShardBytes())
			}
			if got := listDir(t, dir); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
				t.Fatalf("directory holds %v, want %v", got, want)
			}
			f, err := ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			sameTensors(t, f.Tensors, in)
			if !sameMetadata(f.Metadata, md) {
				t.Errorf("metadata %v", f.Metadata)
			}
			if len(s.Tensors) != len(in) {
				t.Errorf("Set.Tensors has %d entries", len(s.Tensors))
			}
			for i, x := range s.Tensors {
				if x.Name != f.Tensors[i].Name || x.Dtype != f.Tensors[i].Dtype || !slices.Equal(x.Shape, f.Tensors[i].Shape) {
					t.Errorf("Set.Tensors[%d] = %+v, ReadDir has %s", i, x, f.Tensors[i].Name)
				}
				if s.Index != nil && s.Index.WeightMap[x.Name] != x.File {
					t.Errorf("tensor %s in %s, index says %s", x.Name, x.File, s.Index.WeightMap[x.Name])
				}
			}

			// Written again with the set's MaxShardBytes, in the same
			// order, the same tensors give the same files, byte for byte,
			// unless a tensor alone was over the limit.
			if tt.max < largest {
				return
			}
			again := t.TempDir()
			if err := WriteDir(again, in, md, s.MaxShardBytes()); err != nil {
				t.Fatal(err)
			}
			a, b := snapshot(t, dir), snapshot(t, again)
			if !maps.EqualFunc(a, b, bytes.Equal) {
				t.Errorf("rewritten with MaxShardBytes %d: %v, first written %v", s.MaxShardBytes(), slices.Sorted(maps.Keys(b)), slices.Sorted(maps.Keys(a)))
			}
		})
	}
}

// The split is huggingface_hub's split_torch_state_dict_into_shards,
// oversized tensors included.
func TestPlanShardsIsHuggingFaces(t *testing.T) {
	tests := []struct {
		sizes []int
		max   int64
		want  string
	}{
		{[]int{4, 4, 4}, 0, "[0 1 2]"},
		{[]int{4, 4, 4}, 8, "[0 1] [2]"},
		{[]int{4, 4, 4}, 7, "[0] [1] [2]"},
		{[]int{4, 4, 4}, 12, "[0 1 2]"},
		{[]int{2, 8, 2}, 9, "[0] [1] [2]"},
		{[]int{2, 6, 2}, 9, "[0 1] [2]"},
		// A tensor over the limit gets a shard of its own, listed before
		// the shard being filled, which goes on filling.
		{[]int{4, 4, 20, 4}, 10, "[2] [0 1] [3]"},
		{[]int{4, 20, 4}, 10, "[1] [0 2]"},
		{[]int{20}, 10, "[0]"},
		{[]int{0, 0}, 1, "[0 1]"},
		{nil, 10, "[]"},
	}
	for _, tt := range tests {
		var ts []Tensor
		for i, n := range tt.sizes {
			ts = append(ts, Tensor{Name: fmt.Sprint(i), Dtype: U8, Shape: []int{n}, Data: make([]byte, n)})
		}
		var got []string
		for _, g := range planShards(ts, tt.max) {
			var names []string
			for _, x := range g {
				names = append(names, x.Name)
			}
			got = append(got, "["+strings.Join(names, " ")+"]")
		}
		if s := strings.Join(got, " "); s != tt.want {
			t.Errorf("sizes %v, max %d: %s, want %s", tt.sizes, tt.max, s, tt.want)
		}
	}
}

// An index as transformers and other exporters write it.
func TestDecodeIndexAccepts(t *testing.T) {
	tests := []struct {
		name, json string
		total      int64
	}{
		{"transformers", `{
  "metadata": {
    "total_size": 497759232
  },
  "weight_map": {
    "h.0.attn.bias": "model-00001-of-00002.safetensors",
    "wte.weight": "model-00002-of-00002.safetensors"
  }
}
`, 497759232},
		{"newer transformers", `{"metadata": {"total_parameters": 124439808, "total_size": 497759232}, "weight_map": {"wte.weight": "model-00001-of-00001.safetensors"}}`, 497759232},
		{"float total_size", `{"metadata": {"total_size": 4.97759232e8}, "weight_map": {"wte.weight": "a.safetensors"}}`, 497759232},
		{"no metadata", `{"weight_map": {"wte.weight": "a.safetensors"}}`, 0},
		{"metadata null", `{"metadata": null, "weight_map": {"wte.weight": "a.safetensors"}}`, 0},
		{"total_size null", `{"metadata": {"total_size": null}, "weight_map": {"wte.weight": "a.safetensors"}}`, 0},
		{"other keys", `{"format": "pt", "weight_map": {"wte.weight": "a.safetensors"}, "x": [1]}`, 0},
		{"unicode names", `{"weight_map": {"π.weight": "ünï.safetensors"}}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix, err := DecodeIndex([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if ix.TotalSize != tt.total {
				t.Errorf("TotalSize %d, want %d", ix.TotalSize, tt.total)
			}
			b, err := EncodeIndex(ix)
			if err != nil {
				t.Fatal(err)
			}
			again, err := DecodeIndex(b)
			if err != nil || again.TotalSize != ix.TotalSize || !maps.Equal(again.WeightMap, ix.WeightMap) {
				t.Errorf("re-encoded %s decodes to %+v, %v", b, again, err)
			}
		})
	}
	// EncodeIndex writes what transformers writes: json.dumps(indent=2,
	// sort_keys=True) and a newline.
	b, err := EncodeIndex(&Index{TotalSize: 12, WeightMap: map[string]string{"b": "y.safetensors", "a<&>": "x.safetensors"}})
	want := "{\n  \"metadata\": {\n    \"total_size\": 12\n  },\n  \"weight_map\": {\n    \"a<&>\": \"x.safetensors\",\n    \"b\": \"y.safetensors\"\n  }\n}\n"
	if err != nil || string(b) != want {
		t.Errorf("EncodeIndex:\n%s\nwant\n%s", b, want)
	}
}

func TestDecodeIndexRejects(t *testing.T) {
	wm := func(file string) string { return `{"weight_map": {"w": ` + file + `}}` }
	tests := []struct {
		name, json string
		msg        string // the error names this
	}{
		// The JSON.
		{"empty", ``, ""},
		{"not an object", `[]`, ""},
		{"trailing data", `{"weight_map": {"w": "a.safetensors"}} {}`, "trailing"},
		{"invalid UTF-8", "{\"weight_map\": {\"w\xff\": \"a.safetensors\"}}", "UTF-8"},
		{"no weight_map", `{"metadata": {}}`, "weight_map"},
		{"weight_map null", `{"weight_map": null}`, "weight_map"},
		{"weight_map an array", `{"weight_map": ["a.safetensors"]}`, "weight_map"},
		{"weight_map empty", `{"weight_map": {}}`, "empty"},
		{"weight_map twice", `{"weight_map": {"w": "a.safetensors"}, "weight_map": {"v": "a.safetensors"}}`, "twice"},
		{"tensor twice", `{"weight_map": {"w": "a.safetensors", "w": "b.safetensors"}}`, `"w" is listed twice`},
		{"reserved name", `{"weight_map": {"__metadata__": "a.safetensors"}}`, "__metadata__"},
		{"shard a number", wm(`7`), `"w"`},
		{"shard null", wm(`null`), `"w"`},
		{"metadata a string", `{"metadata": "x", "weight_map": {"w": "a.safetensors"}}`, "metadata"},
		{"total_size negative", `{"metadata": {"total_size": -1}, "weight_map": {"w": "a.safetensors"}}`, "total_size"},
		{"total_size fractional", `{"metadata": {"total_size": 1.5}, "weight_map": {"w": "a.safetensors"}}`, "total_size"},
		{"total_size a string", `{"metadata": {"total_size": "12"}, "weight_map": {"w": "a.safetensors"}}`, "total_size"},
		{"total_size too large", `{"metadata": {"total_size": 1e30}, "weight_map": {"w": "a.safetensors"}}`, "total_size"},

		// Shard names that are not plain file names in the directory.
		{"parent directory", wm(`"../a.safetensors"`), `"../a.safetensors"`},
		{"dot dot", wm(`".."`), `".."`},
		{"dot", wm(`"."`), `"."`},
		{"empty name", wm(`""`), `""`},
		{"absolute", wm(`"/etc/a.safetensors"`), `"/etc/a.safetensors"`},
		{"subdirectory", wm(`"sub/a.safetensors"`), "separator"},
		{"backslash", wm(`"sub\\a.safetensors"`), "separator"},
		{"windows drive", wm(`"C:\\a.safetensors"`), "separator"},
		{"hidden", wm(`".a.safetensors"`), "hidden"},
		{"NUL", wm(`"a\u0000.safetensors"`), "control"},
		{"newline", wm(`"a\n.safetensors"`), "control"},
		{"not safetensors", wm(`"a.bin"`), ".safetensors"},
		{"the index itself", wm(`"model.safetensors.index.json"`), ".safetensors"},
		{"only the extension", wm(`".safetensors"`), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix, err := DecodeIndex([]byte(tt.json))
			if !errors.Is(err, ErrIndex) {
				t.Fatalf("DecodeIndex = %+v, %v; want ErrIndex", ix, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %s", err, tt.msg)
			}
			t.Log(err)
		})
	}
}

// TestOpenDirRefuses: every disagreement between the index, the shards and
// the directory is an error naming the file and the tensor at fault.
func TestOpenDirRefuses(t *testing.T) {
	// rewrite replaces one shard of dir with the tensors edit returns.
	rewrite := func(t *testing.T, dir, shard string, edit func([]Tensor) []Tensor) {
		t.Helper()
		path := filepath.Join(dir, shard)
		f, err := ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteFile(path, edit(f.Tensors), f.Metadata); err != nil {
			t.Fatal(err)
		}
	}
	without := func(name string) func([]Tensor) []Tensor {
		return func(ts []Tensor) []Tensor {
			return slices.DeleteFunc(ts, func(x Tensor) bool { return x.Name == name })
		}
	}
	with := func(x Tensor) func([]Tensor) []Tensor {
		return func(ts []Tensor) []Tensor { return append(ts, x) }
	}
	d := sixTensors()[3]
	index := func(t *testing.T, dir, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, IndexFile), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	editIndex := func(t *testing.T, dir string, edit func(ix *Index)) {
		t.Helper()
		ix, err := DecodeIndex(must(os.ReadFile(filepath.Join(dir, IndexFile))))
		if err != nil {
			t.Fatal(err)
		}
		edit(ix)
		// Written by hand: EncodeIndex refuses what the reader must refuse.
		var b strings.Builder
		b.WriteString(`{"weight_map": {`)
		for i, name := range slices.Sorted(maps.Keys(ix.WeightMap)) {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q: %q", name, ix.WeightMap[name])
		}
		b.WriteString("}}")
		index(t, dir, b.String())
	}
	tests := []struct {
		name    string
		corrupt func(t *testing.T, dir string)
		want    error
		says    []string
	}{
		// The tensors against the index.
		{"tensor missing from its shard", func(t *testing.T, dir string) { rewrite(t, dir, shard2, without("d")) },
			ErrSet, []string{`"d"`, shard2, "missing"}},
		{"tensor not in the index", func(t *testing.T, dir string) {
			rewrite(t, dir, shard2, with(F32Tensor("x", []int{1}, []float32{1})))
		}, ErrSet, []string{`"x"`, shard2, "not in", IndexFile}},
		{"tensor in another shard than the index says", func(t *testing.T, dir string) {
			rewrite(t, dir, shard2, without("d"))
			rewrite(t, dir, shard3, with(d))
		}, ErrSet, []string{`"d"`, shard3, shard2}},
		{"tensor in two shards", func(t *testing.T, dir string) { rewrite(t, dir, shard3, with(d)) },
			ErrSet, []string{`"d"`, shard2, shard3, "both"}},
		{"index names a shard for a tensor no file holds", func(t *testing.T, dir string) {
			editIndex(t, dir, func(ix *Index) { ix.WeightMap["g"] = shard3 })
		}, ErrSet, []string{`"g"`, shard3, "missing"}},

		// The files in the directory.
		{"a shard the index does not name", func(t *testing.T, dir string) {
			if err := WriteFile(filepath.Join(dir, "model-00004-of-00004.safetensors"), sixTensors()[:1], nil); err != nil {
				t.Fatal(err)
			}
		}, ErrSet, []string{"model-00004-of-00004.safetensors", "not named"}},
		{"both layouts", func(t *testing.T, dir string) {
			if err := WriteFile(filepath.Join(dir, SingleFile), sixTensors(), nil); err != nil {
				t.Fatal(err)
			}
		}, ErrSet, []string{SingleFile, IndexFile, "both"}},
		{"shard missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, shard2)) },
			fs.ErrNotExist, []string{shard2, `tensor "c"`}},
		{"shard a symbolic link", func(t *testing.T, dir string) {
			elsewhere := filepath.Join(t.TempDir(), "x.safetensors")
			os.Rename(filepath.Join(dir, shard2), elsewhere)
			if err := os.Symlink(elsewhere, filepath.Join(dir, shard2)); err != nil {
				t.Fatal(err)
			}
		}, safefile.ErrSymlink, []string{shard2, `tensor "c"`}},
		{"shard a directory", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, shard2))
			os.Mkdir(filepath.Join(dir, shard2), 0o755)
		}, safefile.ErrNotRegular, []string{shard2, `tensor "c"`}},
		{"shard a FIFO", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, shard2))
			if err := syscall.Mkfifo(filepath.Join(dir, shard2), 0o644); err != nil {
				t.Skip(err)
			}
		}, safefile.ErrNotRegular, []string{shard2, "FIFO"}},
		{"shard header length", func(t *testing.T, dir string) {
			overwriteAt(t, filepath.Join(dir, shard3), 0, binary.LittleEndian.AppendUint64(nil, 1<<40))
		}, ErrHeaderSize, []string{shard3}},
		{"shard truncated", func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, shard1), 5) },
			ErrTruncated, []string{shard1}},
		{"shard tensor of an unknown dtype", func(t *testing.T, dir string) {
			path := filepath.Join(dir, shard1)
			b := must(os.ReadFile(path))
			os.WriteFile(path, bytes.Replace(b, []byte(`"F32"`), []byte(`"Q4K"`), 1), 0o644)
		}, ErrDtype, []string{shard1, `"a"`, "Q4K"}},

		// The index.
		{"index not JSON", func(t *testing.T, dir string) { index(t, dir, `{"weight_map": `) }, ErrIndex, []string{IndexFile}},
		{"index escapes the directory", func(t *testing.T, dir string) {
			editIndex(t, dir, func(ix *Index) { ix.WeightMap["c"] = "../" + shard2 })
		}, ErrIndex, []string{IndexFile, `"c"`, "../" + shard2}},
		{"index names an absolute path", func(t *testing.T, dir string) {
			editIndex(t, dir, func(ix *Index) { ix.WeightMap["c"] = filepath.Join(dir, shard2) })
		}, ErrIndex, []string{IndexFile, `"c"`, "separator"}},
		{"index names a file in a subdirectory", func(t *testing.T, dir string) {
			editIndex(t, dir, func(ix *Index) { ix.WeightMap["c"] = "sub/" + shard2 })
		}, ErrIndex, []string{IndexFile, `"c"`, "separator"}},
		{"index a directory", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, IndexFile))
			os.Mkdir(filepath.Join(dir, IndexFile), 0o755)
		}, safefile.ErrNotRegular, []string{IndexFile}},

		// Nothing there.
		{"empty directory", func(t *testing.T, dir string) {
			for _, name := range listDir(t, dir) {
				os.Remove(filepath.Join(dir, name))
			}
		}, fs.ErrNotExist, []string{SingleFile, IndexFile}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := threeShards(t)
			tt.corrupt(t, dir)
			s, err := OpenDir(dir)
			if !errors.Is(err, tt.want) {
				t.Fatalf("OpenDir = %v, %v; want %v", s, err, tt.want)
			}
			for _, w := range tt.says {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			t.Log(err)
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func overwriteAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// A single model.safetensors that is a link (into a download cache) is
// followed, as ReadFile follows it.
func TestOpenDirFollowsALinkedSingleFile(t *testing.T) {
	cache, dir := t.TempDir(), t.TempDir()
	blob := filepath.Join(cache, "blob")
	if err := WriteFile(blob, sixTensors(), nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(blob, filepath.Join(dir, SingleFile)); err != nil {
		t.Fatal(err)
	}
	f, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, f.Tensors, sixTensors())
}

// Each holds one tensor's bytes at a time, not a shard's or the set's: the
// bytes it allocates do not grow with the set.
func TestEachStreams(t *testing.T) {
	const tensorBytes = 256 << 10
	var ts []Tensor
	for i := range 32 { // 8 MiB in 8 shards of 4 tensors
		ts = append(ts, Tensor{Name: fmt.Sprintf("t%02d", i), Dtype: U8, Shape: []int{tensorBytes}, Data: bytes.Repeat([]byte{byte(i)}, tensorBytes)})
	}
	dir := t.TempDir()
	if err := WriteDir(dir, ts, nil, 4*tensorBytes); err != nil {
		t.Fatal(err)
	}
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Files()) != 8 {
		t.Fatalf("%d files, want 8 shards", len(s.Files()))
	}
	allocated := func(f func()) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	seen := 0
	each := allocated(func() {
		err = s.Each(func(x *Tensor) error {
			if x.Name != ts[seen].Name || !bytes.Equal(x.Data, ts[seen].Data) {
				return fmt.Errorf("tensor %d: %s, want %s", seen, x.Name, ts[seen].Name)
			}
			seen++
			return nil
		})
	})
	if err != nil || seen != len(ts) {
		t.Fatalf("Each: %v after %d tensors", err, seen)
	}
	whole := allocated(func() { _, err = ReadDir(dir) })
	t.Logf("a set of %d MiB: Each allocated %.2f MiB, ReadDir %.2f MiB", 32*tensorBytes>>20, float64(each)/(1<<20), float64(whole)/(1<<20))
	// One tensor buffer and one read buffer (1 MiB), and small change.
	if limit := uint64(tensorBytes + 1<<20 + 256<<10); each > limit {
		t.Errorf("Each allocated %d bytes, more than one tensor and a read buffer (%d)", each, limit)
	}
}

// A shard replaced between OpenDir and Each is refused, not read.
func TestEachRefusesAChangedShard(t *testing.T) {
	dir := threeShards(t)
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Same size, same header length: only the header's content differs.
	ts := sixTensors()
	ts[4].Name = "g"
	if err := WriteFile(filepath.Join(dir, shard3), ts[4:], map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = s.Each(func(*Tensor) error { n++; return nil })
	if !errors.Is(err, ErrSet) || !strings.Contains(err.Error(), shard3) {
		t.Fatalf("Each = %v, want ErrSet naming %s", err, shard3)
	}
	if n != 4 {
		t.Errorf("fn called %d times, want 4 (the first two shards)", n)
	}
	// fn's error stops Each and comes back as is.
	s, _ = OpenDir(threeShards(t))
	stop := errors.New("stop")
	if err := s.Each(func(*Tensor) error { return stop }); err != stop {
		t.Errorf("Each = %v, want fn's error", err)
	}
}

// WriteDir replaces a checkpoint of the other layout, or of another shard
// count, leaving only the new one.
func TestWriteDirReplacesOtherLayouts(t *testing.T) {
	steps := []struct {
		max   int64
		files []string
	}{
		{0, []string{SingleFile}},
		{32, []string{IndexFile, shard1, shard2, shard3}},
		{48, []string{IndexFile, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}},
		{32, []string{IndexFile, shard1, shard2, shard3}},
		{0, []string{SingleFile}},
	}
	dir := t.TempDir()
	for i, st := range steps {
		ts := sixTensors()
		ts[0] = F32Tensor("a", []int{1, 4}, []float32{float32(i), 0, 0, 0}) // a new version each time
		if err := WriteDir(dir, ts, nil, st.max); err != nil {
			t.Fatal(err)
		}
		if got := listDir(t, dir); !slices.Equal(got, slices.Sorted(slices.Values(st.files))) {
			t.Fatalf("step %d (max %d): directory holds %v, want %v", i, st.max, got, st.files)
		}
		f, err := ReadDir(dir)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		sameTensors(t, f.Tensors, ts)
	}
}

// An error while writing leaves the old checkpoint as it was and no
// temporary file behind.
func TestWriteDirFailureLeavesTheOldSet(t *testing.T) {
	for _, max := range []int64{0, 32} {
		t.Run(fmt.Sprint("old max ", max), func(t *testing.T) {
			dir := t.TempDir()
			if err := WriteDir(dir, sixTensors(), nil, max); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, dir)
			check := func(t *testing.T, err error, want string) {
				t.Helper()
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("error %v, want one mentioning %s", err, want)
				}
				if after := snapshot(t, dir); !maps.EqualFunc(before, after, bytes.Equal) {
					t.Fatalf("directory changed: %v, was %v", slices.Sorted(maps.Keys(after)), slices.Sorted(maps.Keys(before)))
				}
				t.Log(err)
			}

			// A tensor that does not validate, in the last shard.
			bad := append(sixTensors(), Tensor{Name: "z", Dtype: F32, Shape: []int{3}, Data: make([]byte, 4)})
			err := WriteDir(dir, bad, nil, 32)
			check(t, err, `"z"`)
			if !errors.Is(err, ErrDataSize) {
				t.Errorf("error %v, want ErrDataSize", err)
			}
			// Two tensors of one name in different shards.
			dup := append(sixTensors(), sixTensors()[0])
			err = WriteDir(dir, dup, nil, 32)
			check(t, err, `"a"`)
			if !errors.Is(err, ErrDuplicate) {
				t.Errorf("error %v, want ErrDuplicate", err)
			}
			// The disk failing on the third shard, after two were staged.
			calls := 0
			boom := errors.New("disk full")
			failThird := func(path string, perm os.FileMode, write func(io.Writer) error) (*atomicfile.Pending, error) {
				if calls++; calls == 3 {
					return nil, boom
				}
				return atomicfile.Stage(path, perm, write)
			}
			err = writeDir(dir, sixTensors(), nil, 16, failThird)
			check(t, err, "model-00003-of-00006.safetensors")
			if !errors.Is(err, boom) {
				t.Errorf("error %v, want the stage error", err)
			}
		})
	}
}

// The fixture scripts/gen_sharded.py wrote by hand, as transformers lays
// out a bfloat16 model saved with a max_shard_size: an independent writer.
func TestOpenDirReadsTransformersLayout(t *testing.T) {
	const dir = "../testdata/hf_tiny_bf16_sharded"
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatalf("%v (regenerate with /usr/bin/python3 scripts/gen_sharded.py)", err)
	}
	if want := []string{shard1, shard2, shard3}; !slices.Equal(s.Files(), want) {
		t.Errorf("files %v, want %v", s.Files(), want)
	}
	if s.Index.TotalSize != s.DataBytes() {
		t.Errorf("total_size %d, the shards hold %d bytes of data", s.Index.TotalSize, s.DataBytes())
	}
	for _, x := range s.Tensors {
		if x.Dtype != BF16 {
			t.Errorf("tensor %s is %s, want BF16", x.Name, x.Dtype)
		}
	}
	if s.Metadata()["format"] != "pt" {
		t.Errorf("metadata %v", s.Metadata())
	}
	t.Logf("%d tensors in %v, largest shard %d bytes", len(s.Tensors), s.Files(), s.MaxShardBytes())
	// The index braid writes for the same assignment is the one
	// transformers wrote.
	b, err := EncodeIndex(s.Index)
	if err != nil {
		t.Fatal(err)
	}
	if raw := must(os.ReadFile(filepath.Join(dir, IndexFile))); !bytes.Equal(b, raw) {
		t.Errorf("EncodeIndex differs from the file transformers' layout wrote:\n%s\nwant\n%s", b, raw)
	}
}

// FuzzDecodeIndex: DecodeIndex never panics, and what it accepts EncodeIndex
// writes and DecodeIndex reads back unchanged.
func FuzzDecodeIndex(f *testing.F) {
	f.Add([]byte(`{"metadata": {"total_size": 12}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}`))
	f.Add([]byte(`{"weight_map": {"a": "../x.safetensors"}}`))
	f.Add([]byte(`{"metadata": {"total_size": 1.2e1, "total_parameters": 3}, "weight_map": {"": "a.safetensors"}}`))
	f.Add([]byte(`{"weight_map": {"a": "a.safetensors", "a": "b.safetensors"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := DecodeIndex(b)
		if err != nil {
			if !errors.Is(err, ErrIndex) {
				t.Fatalf("error %v does not wrap ErrIndex", err)
			}
			return
		}
		for name, file := range ix.WeightMap {
			if checkShardName(file) != nil || filepath.Base(file) != file || !filepath.IsLocal(file) {
				t.Fatalf("tensor %q: accepted shard %q", name, file)
			}
		}
		out, err := EncodeIndex(ix)
		if err != nil {
			t.Fatalf("EncodeIndex of a decoded index: %v", err)
		}
		again, err := DecodeIndex(out)
		if err != nil {
			t.Fatalf("decode of the re-encoded index: %v\n%s", err, out)
		}
		if again.TotalSize != ix.TotalSize || !maps.Equal(again.WeightMap, ix.WeightMap) {
			t.Fatalf("re-encoded index decodes to %+v, want %+v", again, ix)
		}
	})
}

// FuzzOpenDir: whatever the index says about three valid shards, OpenDir
// never panics, and a set it accepts reads back exactly the shards'
// tensors, each from the file the index names.
func FuzzOpenDir(f *testing.F) {
	// The shards are written once (without WriteDir's fsyncs, slow on some
	// disks); each input replaces only the index, run one at a time.
	dir := f.TempDir()
	for _, g := range [][]Tensor{sixTensors()[:2], sixTensors()[2:4], sixTensors()[4:]} {
		name := map[string]string{"a": shard1, "c": shard2, "e": shard3}[g[0].Name]
		var buf bytes.Buffer
		if err := Encode(&buf, g, map[string]string{"format": "pt"}); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	f.Add([]byte(`{"metadata": {"total_size": 96}, "weight_map": {"a": "model-00001-of-00003.safetensors", "b": "model-00001-of-00003.safetensors", "c": "model-00002-of-00003.safetensors", "d": "model-00002-of-00003.safetensors", "e": "model-00003-of-00003.safetensors", "f": "model-00003-of-00003.safetensors"}}`))
	f.Add([]byte(`{"weight_map": {"a": "model-00001-of-00003.safetensors"}}`))
	f.Add([]byte(`{"weight_map": {"a": "model-00001-of-00003.safetensors", "b": "model-00001-of-00003.safetensors", "c": "model-00002-of-00003.safetensors", "d": "model-00002-of-00003.safetensors", "e": "model-00003-of-00003.safetensors", "f": "model-00002-of-00003.safetensors"}}`))
	f.Fuzz(func(t *testing.T, index []byte) {
		if err := os.WriteFile(filepath.Join(dir, IndexFile), index, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := OpenDir(dir)
		if err != nil {
			return
		}
		got, err := ReadDir(dir)
		if err != nil {
			t.Fatalf("OpenDir accepted what ReadDir refuses: %v", err)
		}
		sameTensors(t, got.Tensors, sixTensors())
		for _, x := range s.Tensors {
			if s.Index.WeightMap[x.Name] != x.File {
				t.Fatalf("tensor %s read from %s, the index says %s", x.Name, x.File, s.Index.WeightMap[x.Name])
			}
		}
	})
}

// hubCache lays the set of threeShards out as huggingface_hub's cache
// does: every file's bytes in REPO/blobs under a content name, and
// REPO/snapshots/REV holding relative links to them. It returns the
// snapshot directory and the repository directory.
func hubCache(t *testing.T) (snap, repo string) {
	t.Helper()
	src := threeShards(t)
	repo = filepath.Join(t.TempDir(), "models--org--tiny")
	snap = filepath.Join(repo, "snapshots", "0123abcd")
	for _, d := range []string{filepath.Join(repo, "blobs"), snap} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, name := range listDir(t, src) {
		blob := fmt.Sprintf("blob%02d", i)
		if err := os.Rename(filepath.Join(src, name), filepath.Join(repo, "blobs", blob)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "blobs", blob), filepath.Join(snap, name)); err != nil {
			t.Fatal(err)
		}
	}
	return snap, repo
}

// A sharded model in Hugging Face's hub cache, whose shards are links into
// the repository's blobs, opens and reads; a link in the same layout that
// leads anywhere but into those blobs is still refused.
func TestOpenDirReadsTheHubCache(t *testing.T) {
	snap, repo := hubCache(t)
	f, err := ReadDir(snap)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, f.Tensors, sixTensors())
	s, err := OpenDir(snap)
	if err != nil {
		t.Fatal(err)
	}
	shard := s.Files()[1]
	outside := filepath.Join(repo, "elsewhere.safetensors")
	target, err := filepath.EvalSymlinks(filepath.Join(snap, shard))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(target, outside); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(snap, shard))
	if err := os.Symlink(outside, filepath.Join(snap, shard)); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDir(snap); !errors.Is(err, safefile.ErrSymlink) || !strings.Contains(err.Error(), shard) {
		t.Errorf("a shard linked out of the cache's blobs: %v, want ErrSymlink naming %s", err, shard)
	}
}
