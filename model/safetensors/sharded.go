package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/internal/safefile"
)

// A checkpoint directory holds its tensors as Hugging Face lays them out:
// either in one SingleFile, or in shard files listed by an IndexFile whose
// weight_map names the shard holding each tensor:
//
//	{"metadata": {"total_size": 497759232},
//	 "weight_map": {"wte.weight": "model-00001-of-00002.safetensors", ...}}
const (
	SingleFile = "model.safetensors"
	IndexFile  = "model.safetensors.index.json"
)

// MaxIndexBytes bounds IndexFile; the index of a 400B-parameter model is a
// few hundred kilobytes.
const MaxIndexBytes = 64 << 20

// MaxShards is the most shard files WriteDir writes: Hugging Face's names
// have five digits.
const MaxShards = 99999

// hfShardName matches the shard names Hugging Face and WriteDir write. A
// file of that form in a sharded directory must be named by the index.
var hfShardName = regexp.MustCompile(`^model-[0-9]{5}-of-[0-9]{5}\.safetensors$`)

// shardName is the name of shard i (from 0) of n, as Hugging Face names it.
func shardName(i, n int) string {
	return fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
}

// Index is a decoded IndexFile.
type Index struct {
	// TotalSize is metadata.total_size: the bytes of tensor data in the
	// whole set, headers excluded, as its writer counted them; 0 when
	// absent. Readers do not check it against the shards (published
	// indexes are not always exact, and nothing depends on it).
	TotalSize int64
	// WeightMap maps each tensor's name to the file name of its shard, a
	// plain name in the index's directory ending in ".safetensors".
	WeightMap map[string]string
}

// Files returns the distinct shard file names the index names, sorted.
func (ix *Index) Files() []string {
	var files []string
	for _, f := range ix.WeightMap {
		files = append(files, f)
	}
	slices.Sort(files)
	return slices.Compact(files)
}

// DecodeIndex parses an IndexFile. The file must be UTF-8 JSON holding one
// object with a non-empty "weight_map" object of strings and, optionally, a
// "metadata" object whose "total_size" is a non-negative integer (other
// keys, there and at the top, are ignored as transformers ignores them).
// Every shard name must be a plain file name: no path separator, not "."
// or "..", not absolute, not hidden (a leading dot), no control character,
// ending in ".safetensors". A tensor listed twice is an error. Errors wrap
// ErrIndex and name the tensor at fault; DecodeIndex never panics.
func DecodeIndex(b []byte) (*Index, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrIndex)
	}
	members, err := readObject(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIndex, err)
	}
	ix := &Index{}
	var weightMap, metadata json.RawMessage
	for _, m := range members {
		var dst *json.RawMessage
		switch m.key {
		case "weight_map":
			dst = &weightMap
		case "metadata":
			dst = &metadata
		default:
			continue
		}
		if *dst != nil {
			return nil, fmt.Errorf("%w: key %q appears twice", ErrIndex, m.key)
		}
		*dst = m.raw
	}
	if metadata != nil && string(metadata) != "null" {
		if ix.TotalSize, err = decodeTotalSize(metadata); err != nil {
			return nil, err
		}
	}
	if len(weightMap) == 0 || weightMap[0] != '{' {
		return nil, fmt.Errorf("%w: no weight_map object", ErrIndex)
	}
	entries, err := readObject(weightMap)
	if err != nil {
		return nil, fmt.Errorf("%w: weight_map: %v", ErrIndex, err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: weight_map is empty", ErrIndex)
	}
	ix.WeightMap = make(map[string]string, len(entries))
	for _, e := range entries {
		if _, dup := ix.WeightMap[e.key]; dup {
			return nil, fmt.Errorf("%w: tensor %q is listed twice in weight_map", ErrIndex, e.key)
		}
		if e.key == metadataKey {
			return nil, fmt.Errorf("%w: %q is not a tensor name", ErrIndex, e.key)
		}
		file, ok := jsonString(e.raw)
		if !ok {
			return nil, fmt.Errorf("%w: tensor %q: shard is not a string: %.40s", ErrIndex, e.key, e.raw)
		}
		if err := checkShardName(file); err != nil {
			return nil, fmt.Errorf("%w: tensor %q: shard %q %v", ErrIndex, e.key, file, err)
		}
		ix.WeightMap[e.key] = file
	}
	return ix, nil
}

// decodeTotalSize reads total_size from the index's metadata object. An
// integral float (5e9) is accepted: some writers emit one.
func decodeTotalSize(raw json.RawMessage) (int64, error) {
	if raw[0] != '{' {
		return 0, fmt.Errorf("%w: metadata is not an object: %.40s", ErrIndex, raw)
	}
	ms, err := readObject(raw)
	if err != nil {
		return 0, fmt.Errorf("%w: metadata: %v", ErrIndex, err)
	}
	var total int64
	seen := false
	for _, m := range ms {
		if m.key != "total_size" {
			continue
		}
		if seen {
			return 0, fmt.Errorf("%w: metadata: total_size appears twice", ErrIndex)
		}
		seen = true
		if string(m.raw) == "null" {
			continue
		}
		// m.raw is one JSON value: only a number parses here.
		s := string(bytes.TrimSpace(m.raw))
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			f, ferr := strconv.ParseFloat(s, 64)
			if ferr != nil || f != math.Trunc(f) || f < 0 || f >= 1<<63 {
				return 0, fmt.Errorf("%w: metadata: total_size is not a non-negative integer: %.40s", ErrIndex, m.raw)
			}
			v = int64(f)
		}
		if v < 0 {
			return 0, fmt.Errorf("%w: metadata: total_size is negative (%d)", ErrIndex, v)
		}
		total = v
	}
	return total, nil
}

// checkShardName returns an error (completing "shard %q ...") unless name
// is a plain file name in the index's directory.
func checkShardName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return errors.New("is not a file name")
	case strings.ContainsAny(name, `/\`):
		return errors.New("has a path separator: shards must be plain file names in the index's directory")
	case !filepath.IsLocal(name) || filepath.Base(name) != name:
		return errors.New("is not a plain file name in the index's directory")
	case strings.HasPrefix(name, "."):
		return errors.New("is a hidden file name")
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("has a control character")
	case !strings.HasSuffix(name, ".safetensors") || name == ".safetensors":
		return errors.New(`does not end in ".safetensors"`)
	}
	return nil
}

// EncodeIndex returns ix as Hugging Face writes it: two-space indented
// JSON with sorted keys, {"metadata": {"total_size": N}, "weight_map":
// {...}}, and a final newline. It validates ix as DecodeIndex would and
// returns an error wrapping ErrIndex if DecodeIndex would refuse it.
func EncodeIndex(ix *Index) ([]byte, error) {
	if len(ix.WeightMap) == 0 {
		return nil, fmt.Errorf("%w: weight_map is empty", ErrIndex)
	}
	if ix.TotalSize < 0 {
		return nil, fmt.Errorf("%w: total_size is negative (%d)", ErrIndex, ix.TotalSize)
	}
	for name, file := range ix.WeightMap {
		if name == metadataKey || !utf8.ValidString(name) {
			return nil, fmt.Errorf("%w: %q is not a tensor name", ErrIndex, name)
		}
		if err := checkShardName(file); err != nil {
			return nil, fmt.Errorf("%w: tensor %q: shard %q %v", ErrIndex, name, file, err)
		}
	}
	type metadata struct {
		TotalSize int64 `json:"total_size"`
	}
	doc := struct {
		Metadata  metadata          `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}{metadata{ix.TotalSize}, ix.WeightMap}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIndex, err)
	}
	return buf.Bytes(), nil
}

// TensorInfo describes one tensor of a Set without its data.
type TensorInfo struct {
	Name  string
	Dtype Dtype
	Shape []int
	// File is the name, in the set's directory, of the file holding it.
	File string
}

// Set is the tensors of a checkpoint directory, in a SingleFile or in
// shards listed by an IndexFile, with every file's header read and checked
// but no tensor data read. OpenDir makes one; Each reads the data one
// tensor at a time. A Set is immutable and safe for concurrent use.
type Set struct {
	// Dir is the directory OpenDir read.
	Dir string
	// Index is the decoded IndexFile, nil for a SingleFile.
	Index *Index
	// Tensors lists every tensor in file-name order, then file order (by
	// offset). Names are unique across the set. Callers must not modify it.
	Tensors []TensorInfo

	files []setFile // in name order
}

// setFile is one file of a Set as OpenDir found it.
type setFile struct {
	name     string
	noFollow bool // a shard named by the index: a symbolic link is refused
	size     int64
	header   []byte // the raw JSON header, to notice a replaced file
	tensors  []Tensor
	spans    []span
	metadata map[string]string
}

// OpenDir opens the checkpoint in dir: IndexFile and the shards it names if
// the index exists, else SingleFile. It reads the index and every file's
// header and checks everything but the tensors' bytes:
//
//   - each file as Decode checks it, and against MaxFileBytes;
//   - the index as DecodeIndex checks it (shard names are plain file names
//     in dir: a name cannot escape it);
//   - every tensor in the file the index names for it: none missing from its
//     shard, none in a shard the index does not name for it, none in two
//     shards;
//   - no file in dir named like a Hugging Face shard (model-00001-of-00003
//     .safetensors) that the index does not name, as a stale shard of
//     another set would be;
//   - not both SingleFile and IndexFile: which one is current is not
//     knowable.
//
// Shards are opened with safefile.OpenNoFollow: a symbolic link is refused
// (ErrSymlink), so that an index cannot reach outside dir through one, but
// for the one layout that is made of links, Hugging Face's cache (dir is
// REPO/snapshots/REVISION and each shard links to a file in REPO/blobs,
// cacheBlob); SingleFile and IndexFile, fixed names the caller chose with dir, are opened
// with safefile.Open, which follows links. Errors name the file, and the
// tensor where there is one, and wrap ErrIndex, ErrSet, a Decode sentinel, a
// safefile sentinel or an I/O error (fs.ErrNotExist when dir holds neither
// file). OpenDir never panics on any content.
func OpenDir(dir string) (*Set, error) {
	indexPath := filepath.Join(dir, IndexFile)
	b, err := safefile.ReadFile(indexPath, MaxIndexBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return openSingle(dir)
	}
	if err != nil {
		return nil, err // names the path
	}
	if _, err := os.Lstat(filepath.Join(dir, SingleFile)); err == nil {
		return nil, fmt.Errorf("%w: %s holds both %s and %s: remove the stale one", ErrSet, dir, SingleFile, IndexFile)
	}
	ix, err := DecodeIndex(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", indexPath, err)
	}
	names := ix.Files()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err // names the path
	}
	for _, e := range entries {
		if hfShardName.MatchString(e.Name()) && !slices.Contains(names, e.Name()) {
			return nil, fmt.Errorf("%w: %s is not named by %s (a shard of another set?)", ErrSet, filepath.Join(dir, e.Name()), indexPath)
		}
	}
	s := &Set{Dir: dir, Index: ix}
	for _, name := range names {
		f, err := readSetFile(dir, name, true)
		if err != nil {
			if openFailed(err) { // say which tensors were to be there
				err = fmt.Errorf("%w (the shard of tensor %q in %s)", err, firstTensorIn(ix, name), indexPath)
			}
			return nil, err
		}
		s.files = append(s.files, *f)
	}
	// Each tensor in the file the index names for it, and only there.
	where := make(map[string]string, len(ix.WeightMap)) // tensor → file found in
	for _, f := range s.files {
		path := filepath.Join(dir, f.name)
		for _, t := range f.tensors {
			want, listed := ix.WeightMap[t.Name]
			prev, seen := where[t.Name]
			switch {
			case seen:
				return nil, fmt.Errorf("%w: tensor %q is in both %s and %s", ErrSet, t.Name, filepath.Join(dir, prev), path)
			case !listed:
				return nil, fmt.Errorf("%w: tensor %q in %s is not in %s", ErrSet, t.Name, path, indexPath)
			case want != f.name:
				return nil, fmt.Errorf("%w: tensor %q is in %s but %s puts it in %s", ErrSet, t.Name, path, indexPath, want)
			}
			where[t.Name] = f.name
		}
	}
	for _, name := range slices.Sorted(maps.Keys(ix.WeightMap)) {
		if _, ok := where[name]; !ok {
			return nil, fmt.Errorf("%w: tensor %q is missing from %s, where %s puts it", ErrSet, name, filepath.Join(dir, ix.WeightMap[name]), indexPath)
		}
	}
	s.Tensors = s.infos()
	return s, nil
}

// openFailed reports whether err is a failure to open a file, not a
// problem with its content.
func openFailed(err error) bool {
	_, isPath := errors.AsType[*fs.PathError](err)
	return isPath || errors.Is(err, safefile.ErrSymlink) || errors.Is(err, safefile.ErrNotRegular) || errors.Is(err, safefile.ErrTooLarge)
}

// firstTensorIn returns the first tensor, by name, that ix puts in file.
func firstTensorIn(ix *Index, file string) string {
	first := ""
	for name, f := range ix.WeightMap {
		if f == file && (first == "" || name < first) {
			first = name
		}
	}
	return first
}

func openSingle(dir string) (*Set, error) {
	f, err := readSetFile(dir, SingleFile, false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("safetensors: %s holds no %s: %w", dir, IndexFile, err)
		}
		return nil, err
	}
	s := &Set{Dir: dir, files: []setFile{*f}}
	s.Tensors = s.infos()
	return s, nil
}

func (s *Set) infos() []TensorInfo {
	var out []TensorInfo
	for _, f := range s.files {
		for _, t := range f.tensors {
			out = append(out, TensorInfo{Name: t.Name, Dtype: t.Dtype, Shape: slices.Clone(t.Shape), File: f.name})
		}
	}
	return out
}

// openSetFile opens dir/name and reads its header, returning the open file
// (positioned at the data section), its size and the raw header.
func openSetFile(dir, name string, noFollow bool) (*os.File, int64, []byte, error) {
	path := filepath.Join(dir, name)
	open := safefile.Open
	if noFollow {
		open = safefile.OpenNoFollow
		if blob, ok := cacheBlob(dir, name); ok {
			path = blob
		}
	}
	f, size, err := open(path, MaxFileBytes)
	if err != nil {
		return nil, 0, nil, err // names the path
	}
	if size < 8 {
		f.Close()
		return nil, 0, nil, fmt.Errorf("%s: %w: got %d bytes", path, ErrTruncated, size)
	}
	var pre [8]byte
	if _, err := io.ReadFull(f, pre[:]); err != nil {
		f.Close()
		return nil, 0, nil, fmt.Errorf("safetensors: reading %s: %w", path, err)
	}
	n, err := headerLen(binary.LittleEndian.Uint64(pre[:]), size)
	if err != nil {
		f.Close()
		return nil, 0, nil, fmt.Errorf("%s: %w", path, err)
	}
	header := make([]byte, n)
	if _, err := io.ReadFull(f, header); err != nil {
		f.Close()
		return nil, 0, nil, fmt.Errorf("safetensors: reading %s: %w", path, err)
	}
	return f, size, header, nil
}

// readSetFile reads and checks the header of dir/name.
func readSetFile(dir, name string, noFollow bool) (*setFile, error) {
	f, size, header, err := openSetFile(dir, name, noFollow)
	if err != nil {
		return nil, err
	}
	f.Close()
	file, spans, err := decodeHeader(header, size-8-int64(len(header)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
	}
	return &setFile{name: name, noFollow: noFollow, size: size, header: header,
		tensors: file.Tensors, spans: spans, metadata: file.Metadata}, nil
}

// Files returns the names of the set's files in dir, in name order.
func (s *Set) Files() []string {
	out := make([]string, len(s.files))
	for i, f := range s.files {
		out[i] = f.name
	}
	return out
}

// Metadata returns the __metadata__ of the set's first file (WriteDir
// writes the same into every shard); nil if it has none. Callers must not
// modify it.
func (s *Set) Metadata() map[string]string { return s.files[0].metadata }

// DataBytes returns the bytes of tensor data in the set, headers excluded,
// as Index.TotalSize counts them.
func (s *Set) DataBytes() int64 {
	var n int64
	for _, f := range s.files {
		n += f.dataBytes()
	}
	return n
}

// MaxShardBytes returns 0 for a SingleFile, else the tensor data bytes of
// the largest shard: passed to WriteDir with the same tensors in the order
// they were split, it splits them into the same shards, unless a tensor
// alone was larger than the limit the set was written with (that limit is
// not recorded; then the split differs, still within the same bound).
func (s *Set) MaxShardBytes() int64 {
	if s.Index == nil {
		return 0
	}
	var m int64
	for _, f := range s.files {
		m = max(m, f.dataBytes())
	}
	return m
}

func (f *setFile) dataBytes() int64 { return f.size - 8 - int64(len(f.header)) }

// Each reads the set's tensors one at a time, in the order of s.Tensors, and
// calls fn with each; it stops at the first error and returns it (fn's as
// is). t.Data is valid only during the call: the same buffer holds the next
// tensor, so fn copies or converts what it keeps, and must not modify t.
//
// Each reopens every file and refuses one whose size or header changed
// since OpenDir (ErrSet). It holds one file open at a time and one buffer
// as large as the largest tensor, so reading a set needs that buffer on top
// of whatever fn keeps, not the bytes of a shard, let alone of the whole
// set.
func (s *Set) Each(fn func(t *Tensor) error) error {
	var largest int
	for _, f := range s.files {
		for _, sp := range f.spans {
			largest = max(largest, sp.end-sp.begin)
		}
	}
	buf := make([]byte, largest)
	var r *bufio.Reader
	for i := range s.files {
		sf := &s.files[i]
		path := filepath.Join(s.Dir, sf.name)
		f, size, header, err := openSetFile(s.Dir, sf.name, sf.noFollow)
		if err != nil {
			return err
		}
		if size != sf.size || !bytes.Equal(header, sf.header) {
			f.Close()
			return fmt.Errorf("%w: %s changed since it was opened", ErrSet, path)
		}
		if r == nil {
			r = bufio.NewReaderSize(f, 1<<20)
		} else {
			r.Reset(f)
		}
		// The tensors tile the data section in file order.
		for k := range sf.tensors {
			t := sf.tensors[k]
			sp := sf.spans[k]
			t.Data = buf[: sp.end-sp.begin : sp.end-sp.begin]
			if _, err := io.ReadFull(r, t.Data); err != nil {
				f.Close()
				return fmt.Errorf("safetensors: reading tensor %q of %s: %w", t.Name, path, err)
			}
			if err := fn(&t); err != nil {
				f.Close()
				return err
			}
		}
		f.Close()
	}
	return nil
}

// ReadDir reads every tensor of the checkpoint in dir (OpenDir, then Each)
// into one File: the tensors in the order of Set.Tensors, owning their data
// (one allocation for all of it), and the first file's metadata. It holds
// the whole set in memory; to convert tensors as they are read, use OpenDir
// and Each.
func ReadDir(dir string) (*File, error) {
	s, err := OpenDir(dir)
	if err != nil {
		return nil, err
	}
	data := make([]byte, 0, s.DataBytes())
	f := &File{Metadata: s.Metadata(), Tensors: make([]Tensor, 0, len(s.Tensors))}
	err = s.Each(func(t *Tensor) error {
		start := len(data)
		data = append(data, t.Data...)
		f.Tensors = append(f.Tensors, Tensor{Name: t.Name, Dtype: t.Dtype, Shape: t.Shape, Data: data[start:len(data):len(data)]})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// WriteDir writes tensors and metadata into the existing directory dir as a
// checkpoint OpenDir reads, in Hugging Face's layout: with maxShardBytes <=
// 0, or if everything fits in one shard, one SingleFile; otherwise shards
// named model-00001-of-0000n.safetensors, each with metadata, and an
// IndexFile with total_size. The split is Hugging Face's
// (split_torch_state_dict_into_shards): tensors in the given order fill a
// shard until the next would take its data past maxShardBytes, and a tensor
// larger than that gets a shard of its own. Each shard is encoded as Encode
// encodes, so the same tensors in the same order give the same bytes.
//
// Everything is validated, then every file written and fsynced under a
// temporary name, before anything in dir changes: an error up to there
// leaves dir as it was, with no temporary file. Only then does WriteDir
// replace the old checkpoint: for shards it removes the old IndexFile and
// SingleFile, then stale shards of the old set, renames the new shards into
// place and writes the IndexFile last; for a SingleFile it renames it into
// place, then removes an old IndexFile and its shards. An error or a crash
// during that short sequence can leave dir without a checkpoint OpenDir
// accepts (no index, or both files), never with a mix of old and new
// tensors that it would accept. An error wrapping atomicfile.ErrSyncDir
// means everything is in place but the final directory fsync failed (some
// file systems refuse it), as for WriteFile. Files are created with mode
// 0644. Errors name the file and the tensor where there is one.
func WriteDir(dir string, tensors []Tensor, metadata map[string]string, maxShardBytes int64) error {
	return writeDir(dir, tensors, metadata, maxShardBytes, atomicfile.Stage)
}

// writeDir is WriteDir with the function that stages each file, which
// tests replace to fail part-way.
func writeDir(dir string, tensors []Tensor, metadata map[string]string, maxShardBytes int64,
	stage func(path string, perm os.FileMode, write func(io.Writer) error) (*atomicfile.Pending, error)) error {
	groups := planShards(tensors, maxShardBytes)
	if len(groups) > MaxShards {
		return fmt.Errorf("safetensors: %s: %d shards, more than the %d Hugging Face's names allow: raise the shard size", dir, len(groups), MaxShards)
	}
	names := []string{SingleFile}
	if len(groups) > 1 {
		names = make([]string, len(groups))
		for i := range groups {
			names[i] = shardName(i, len(groups))
		}
	}
	// Validate before touching the file system: each shard's tensors, and
	// names unique across shards.
	seen := make(map[string]string, len(tensors))
	for i, g := range groups {
		if _, _, err := encodeHeader(g, metadata); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, names[i]), err)
		}
		for _, t := range g {
			if prev, dup := seen[t.Name]; dup {
				return fmt.Errorf("%w: tensor %q in both %s and %s", ErrDuplicate, t.Name, prev, names[i])
			}
			seen[t.Name] = names[i]
		}
	}
	var index []byte
	if len(groups) > 1 {
		ix := &Index{WeightMap: seen}
		for _, t := range tensors {
			ix.TotalSize += int64(len(t.Data))
		}
		var err error
		if index, err = EncodeIndex(ix); err != nil {
			return fmt.Errorf("safetensors: %s: %w", filepath.Join(dir, IndexFile), err)
		}
	}

	staged := make([]*atomicfile.Pending, 0, len(groups))
	abort := func() {
		for _, p := range staged {
			p.Abort()
		}
	}
	for i, g := range groups {
		path := filepath.Join(dir, names[i])
		p, err := stage(path, 0o644, func(f io.Writer) error {
			w := bufio.NewWriterSize(f, 1<<20)
			if err := Encode(w, g, metadata); err != nil {
				return err
			}
			return w.Flush()
		})
		if err != nil {
			abort()
			return fmt.Errorf("safetensors: write %s: %w", path, err)
		}
		staged = append(staged, p)
	}
	if len(groups) == 1 {
		return commitSingle(dir, staged[0])
	}
	return commitShards(dir, staged, names, index)
}

// planShards splits tensors, in order, as Hugging Face's
// split_torch_state_dict_into_shards does. It returns one group (all of
// tensors, possibly none) when maxBytes <= 0.
func planShards(tensors []Tensor, maxBytes int64) [][]Tensor {
	if maxBytes <= 0 {
		return [][]Tensor{tensors}
	}
	var groups [][]Tensor
	var cur []Tensor
	var curBytes int64
	for _, t := range tensors {
		n := int64(len(t.Data))
		if n > maxBytes {
			groups = append(groups, []Tensor{t})
			continue
		}
		if curBytes+n > maxBytes && len(cur) > 0 {
			groups = append(groups, cur)
			cur, curBytes = nil, 0
		}
		cur = append(cur, t)
		curBytes += n
	}
	if len(cur) > 0 || len(groups) == 0 {
		groups = append(groups, cur)
	}
	return groups
}

// commitSingle puts a staged SingleFile in place, then removes a sharded
// set it replaces (index first).
func commitSingle(dir string, p *atomicfile.Pending) error {
	path := filepath.Join(dir, SingleFile)
	if err := p.Commit(); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err := removeOld(dir, IndexFile); err != nil {
		return err
	}
	if err := removeStaleShards(dir, nil); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("safetensors: write %s: %w: %v", path, atomicfile.ErrSyncDir, err)
	}
	return nil
}

// commitShards invalidates the old checkpoint (its index, or its single
// file), removes its shards, renames the staged shards into place and
// writes the index, whose presence marks a complete set.
func commitShards(dir string, staged []*atomicfile.Pending, names []string, index []byte) error {
	abort := func(from int) {
		for _, p := range staged[from:] {
			p.Abort()
		}
	}
	for _, name := range []string{IndexFile, SingleFile} {
		if err := removeOld(dir, name); err != nil {
			abort(0)
			return err
		}
	}
	if err := removeStaleShards(dir, names); err != nil {
		abort(0)
		return err
	}
	for i, p := range staged {
		if err := p.Commit(); err != nil {
			abort(i + 1)
			return fmt.Errorf("safetensors: write %s (%s has no index now): %w", filepath.Join(dir, names[i]), dir, err)
		}
	}
	path := filepath.Join(dir, IndexFile)
	if err := atomicfile.WriteBytes(path, index, 0o644); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	return nil
}

// removeOld removes dir/name if it exists.
func removeOld(dir, name string) error {
	path := filepath.Join(dir, name)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("safetensors: remove old %s: %w", path, err)
	}
	return nil
}

// removeStaleShards removes the files in dir named like Hugging Face shards
// that are not in keep.
func removeStaleShards(dir string, keep []string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	for _, e := range entries {
		if hfShardName.MatchString(e.Name()) && !slices.Contains(keep, e.Name()) {
			if err := removeOld(dir, e.Name()); err != nil {
				return err
			}
		}
	}
	return nil
}

// cacheBlob returns the file that dir/name links to when dir is a snapshot
// of Hugging Face's hub cache (REPO/snapshots/REVISION, as
// huggingface_hub's snapshot_download leaves it) and the link resolves to
// a regular file in REPO/blobs, where the cache keeps every file's
// content: the one place a shard's link may lead. Anything else (not a
// link, another layout, a link out of the repository's blobs) is not
// resolved, and the caller's OpenNoFollow refuses a link.
func cacheBlob(dir, name string) (string, bool) {
	path := filepath.Join(dir, name)
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return "", false
	}
	abs, err := filepath.Abs(dir)
	if err != nil || filepath.Base(filepath.Dir(abs)) != "snapshots" {
		return "", false
	}
	blobs, err := filepath.EvalSymlinks(filepath.Join(filepath.Dir(filepath.Dir(abs)), "blobs"))
	if err != nil {
		return "", false
	}
	target, err := filepath.EvalSymlinks(path)
	if err != nil || filepath.Dir(target) != blobs {
		return "", false
	}
	return target, true
}
