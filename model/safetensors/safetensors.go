// Package safetensors reads and writes the safetensors tensor container
// format used by Hugging Face and by braid's PyTorch reference fixtures.
//
// A file is an 8-byte little-endian unsigned header length N, N bytes of JSON
// header, then the data section:
//
//	{"__metadata__": {"k": "v"},
//	 "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//
// Offsets are relative to the start of the data section. Tensor data is
// row-major and little-endian.
//
// Decode validates the whole file before returning anything: the header length,
// that the header is valid UTF-8 JSON holding one object with no duplicate keys,
// every dtype, shape and offset pair, and that the tensors tile the data section
// exactly (no gaps, no overlaps, nothing left over), as the reference Rust
// implementation requires. It returns an error wrapping one of the sentinel
// errors below for any malformed input and never panics.
//
// Encode and WriteFile produce canonical bytes: the metadata first, then the
// tensors sorted by name in both the header and the data section, with the
// header padded with spaces so that the data section starts 8-byte aligned.
// Decoding a file and encoding it again is therefore deterministic, and
// encoding the result of decoding an encoded file reproduces it byte for byte.
//
// A checkpoint directory in Hugging Face's layout, one model.safetensors or
// shards listed by model.safetensors.index.json, is read with OpenDir, which
// checks every header and the index before any tensor data is read, and
// Set.Each, which then reads the tensors one at a time; WriteDir writes one,
// sharded as Hugging Face shards, replacing the old files only once every
// new one is written (sharded.go).
//
// What this package does not do: memory mapping, arithmetic on tensors, or
// the 8-bit float dtypes (F8_E4M3, F8_E5M2), which are rejected as
// unsupported. Conversions exist to float32 (Float32s, CopyFloat32s), to
// int32 (Int32s), from float32 to F32, F16 and BF16 (FloatTensor), and
// between float32 and bfloat16 bits in bulk (BF16Bits, BF16ToFloat32s,
// BF16FromFloat32s). It holds no global state and all functions are safe for
// concurrent use on distinct values.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them (the functions that touch files may instead wrap an *fs.PathError,
// another I/O error or an internal/safefile sentinel); the wrapping message
// names the offending file and tensor where there is one.
var (
	// ErrTruncated: the input is shorter than the 8-byte header length.
	ErrTruncated = errors.New("safetensors: file shorter than 8 bytes")
	// ErrHeaderSize: the header length exceeds the file or MaxHeaderSize.
	ErrHeaderSize = errors.New("safetensors: bad header length")
	// ErrHeader: the header is not valid UTF-8 JSON holding one object, or an
	// entry in it is not an object with exactly dtype, shape and data_offsets.
	ErrHeader = errors.New("safetensors: malformed header")
	// ErrDtype: a dtype this package does not support.
	ErrDtype = errors.New("safetensors: unsupported dtype")
	// ErrShape: a negative dimension, a non-integer one, or an element count
	// or byte size that overflows int.
	ErrShape = errors.New("safetensors: invalid shape")
	// ErrOffsets: data_offsets malformed, out of range, inconsistent with
	// shape and dtype, overlapping, or leaving gaps in the data section.
	ErrOffsets = errors.New("safetensors: invalid data offsets")
	// ErrDuplicate: two tensors (or two metadata keys) share a name.
	ErrDuplicate = errors.New("safetensors: duplicate name")
	// ErrMetadata: __metadata__ is not an object of string values.
	ErrMetadata = errors.New("safetensors: invalid metadata")
	// ErrName: Encode was given a tensor named "__metadata__".
	ErrName = errors.New("safetensors: reserved tensor name")
	// ErrDataSize: a Tensor's Data length does not equal its shape times its
	// dtype size.
	ErrDataSize = errors.New("safetensors: data length does not match shape")
	// ErrConvert: Float32s or Int32s called on a dtype they do not convert.
	ErrConvert = errors.New("safetensors: cannot convert dtype")
	// ErrRange: an I64 value does not fit in int32.
	ErrRange = errors.New("safetensors: value out of range")
	// ErrIndex: an IndexFile that is not valid JSON of the expected shape,
	// lists a tensor twice, or names a shard that is not a plain file name.
	ErrIndex = errors.New("safetensors: malformed index")
	// ErrSet: the files of a checkpoint directory disagree: a tensor
	// missing from the shard the index names, in a shard the index does
	// not name for it, or in two shards; a shard-named file the index does
	// not list; both a SingleFile and an IndexFile; a file changed between
	// OpenDir and Each.
	ErrSet = errors.New("safetensors: inconsistent checkpoint files")
)

// MaxHeaderSize is the largest JSON header Decode accepts, in bytes. It is the
// same bound as the reference implementation's.
const MaxHeaderSize = 100_000_000

// maxIntArrayBytes bounds the JSON text of a shape or data_offsets array:
// room for 64 dimensions of 20 digits with spaces, far beyond any real tensor.
const maxIntArrayBytes = 64 * 24

// metadataKey is the reserved header key holding the string-to-string metadata.
const metadataKey = "__metadata__"

// Dtype names a tensor element type as spelled in the header.
type Dtype string

// Supported dtypes.
const (
	BOOL Dtype = "BOOL"
	U8   Dtype = "U8"
	I8   Dtype = "I8"
	U16  Dtype = "U16"
	I16  Dtype = "I16"
	F16  Dtype = "F16"
	BF16 Dtype = "BF16"
	U32  Dtype = "U32"
	I32  Dtype = "I32"
	F32  Dtype = "F32"
	U64  Dtype = "U64"
	I64  Dtype = "I64"
	F64  Dtype = "F64"
)

// Size is the size of one element in bytes, or 0 if d is not supported.
func (d Dtype) Size() int {
	switch d {
	case BOOL, U8, I8:
		return 1
	case U16, I16, F16, BF16:
		return 2
	case U32, I32, F32:
		return 4
	case U64, I64, F64:
		return 8
	}
	return 0
}

// Tensor is one named tensor. Data holds the elements row-major and
// little-endian; its length must be the product of Shape times Dtype.Size().
// An empty Shape is a scalar with one element.
type Tensor struct {
	Name  string
	Dtype Dtype
	Shape []int
	Data  []byte
}

// File is a decoded safetensors file.
type File struct {
	// Tensors in file order, that is by ascending data offset.
	Tensors []Tensor
	// Metadata from the header's __metadata__ object; nil if there was none.
	Metadata map[string]string
}

// Tensor returns the tensor with the given name. The pointer refers into
// f.Tensors. The search is linear.
func (f *File) Tensor(name string) (*Tensor, bool) {
	for i := range f.Tensors {
		if f.Tensors[i].Name == name {
			return &f.Tensors[i], true
		}
	}
	return nil, false
}

// F32Tensor returns a F32 tensor holding a little-endian copy of data.
// It panics if len(data) does not match shape, a programmer error.
func F32Tensor(name string, shape []int, data []float32) Tensor {
	checkLen("F32Tensor", name, shape, len(data))
	b := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return Tensor{Name: name, Dtype: F32, Shape: slices.Clone(shape), Data: b}
}

// I32Tensor returns an I32 tensor holding a little-endian copy of data.
// It panics if len(data) does not match shape, a programmer error.
func I32Tensor(name string, shape []int, data []int32) Tensor {
	checkLen("I32Tensor", name, shape, len(data))
	b := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
	}
	return Tensor{Name: name, Dtype: I32, Shape: slices.Clone(shape), Data: b}
}

func checkLen(fn, name string, shape []int, n int) {
	nel, err := numElements(shape)
	if err != nil || nel != n {
		panic(fmt.Sprintf("safetensors: %s(%q): shape %v does not hold %d elements", fn, name, shape, n))
	}
}

// Float32s returns the elements converted to float32. F32 is copied exactly;
// F16 and BF16 are widened exactly (subnormals, infinities and NaNs included);
// F64 is rounded to the nearest float32. Other dtypes return ErrConvert.
// The result is a new slice.
func (t *Tensor) Float32s() ([]float32, error) {
	n, err := t.check()
	if err != nil {
		return nil, err
	}
	out := make([]float32, n)
	if err := t.CopyFloat32s(out); err != nil {
		return nil, err
	}
	return out, nil
}

// Int32s returns the elements as int32. I32 is copied; I64 is narrowed and
// returns ErrRange if any value does not fit. Other dtypes return ErrConvert.
// The result is a new slice.
func (t *Tensor) Int32s() ([]int32, error) {
	n, err := t.check()
	if err != nil {
		return nil, err
	}
	out := make([]int32, n)
	d := t.Data
	switch t.Dtype {
	case I32:
		for i := range out {
			out[i] = int32(binary.LittleEndian.Uint32(d[4*i:]))
		}
	case I64:
		for i := range out {
			v := int64(binary.LittleEndian.Uint64(d[8*i:]))
			if v < math.MinInt32 || v > math.MaxInt32 {
				return nil, fmt.Errorf("%w: tensor %q: element %d = %d does not fit in int32", ErrRange, t.Name, i, v)
			}
			out[i] = int32(v)
		}
	default:
		return nil, fmt.Errorf("%w: tensor %q: %s to int32", ErrConvert, t.Name, t.Dtype)
	}
	return out, nil
}

// check validates t's dtype, shape and data length and returns its element count.
func (t *Tensor) check() (int, error) {
	size := t.Dtype.Size()
	if size == 0 {
		return 0, fmt.Errorf("%w: tensor %q: %q", ErrDtype, t.Name, t.Dtype)
	}
	n, err := numElements(t.Shape)
	if err != nil {
		return 0, fmt.Errorf("%w: tensor %q: %v", ErrShape, t.Name, err)
	}
	nb, ok := mulInt(n, size)
	if !ok {
		return 0, fmt.Errorf("%w: tensor %q: shape %v of %s overflows", ErrShape, t.Name, t.Shape, t.Dtype)
	}
	if len(t.Data) != nb {
		return 0, fmt.Errorf("%w: tensor %q: %d bytes for shape %v of %s (want %d)", ErrDataSize, t.Name, len(t.Data), t.Shape, t.Dtype, nb)
	}
	return n, nil
}

// numElements is the product of shape. Dimensions must be non-negative and
// the product of the non-zero ones must fit in int, so whether a shape is
// valid does not depend on the order of its dimensions.
func numElements(shape []int) (int, error) {
	n, zero := 1, false
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("dimension %d is negative (%d)", i, d)
		}
		if d == 0 {
			zero = true
			continue
		}
		var ok bool
		if n, ok = mulInt(n, d); !ok {
			return 0, fmt.Errorf("element count of %v overflows", shape)
		}
	}
	if zero {
		return 0, nil
	}
	return n, nil
}

// mulInt returns a*b for non-negative a, b and whether it fit in int.
func mulInt(a, b int) (int, bool) {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi != 0 || lo > math.MaxInt {
		return 0, false
	}
	return int(lo), true
}

// Decode parses a complete safetensors file. It validates everything (see the
// package comment) and never panics. The Data of each returned tensor aliases
// b, with its capacity clipped to its length; the caller must not modify b
// while the File is in use.
func Decode(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("%w: got %d bytes", ErrTruncated, len(b))
	}
	n, err := headerLen(binary.LittleEndian.Uint64(b), int64(len(b)))
	if err != nil {
		return nil, err
	}
	data := b[8+n:]
	f, spans, err := decodeHeader(b[8:8+n], int64(len(data)))
	if err != nil {
		return nil, err
	}
	for i, s := range spans {
		f.Tensors[i].Data = data[s.begin:s.end:s.end]
	}
	return f, nil
}

// headerLen checks the header length n read from the first 8 bytes of a
// file of fileSize bytes (at least 8) and returns it as an int.
func headerLen(n uint64, fileSize int64) (int, error) {
	if n > MaxHeaderSize {
		return 0, fmt.Errorf("%w: %d bytes exceeds the limit of %d", ErrHeaderSize, n, MaxHeaderSize)
	}
	if n > uint64(fileSize-8) {
		return 0, fmt.Errorf("%w: %d bytes but only %d follow the length", ErrHeaderSize, n, fileSize-8)
	}
	return int(n), nil
}

// span is a tensor's byte range [begin, end) in the data section.
type span struct{ begin, end int }

// decodeHeader validates a header for a data section of dataLen bytes and
// returns the tensors in file order, without their Data, and each one's
// byte range, which tile the data section exactly.
func decodeHeader(header []byte, dataLen int64) (*File, []span, error) {
	if !utf8.Valid(header) {
		return nil, nil, fmt.Errorf("%w: not valid UTF-8", ErrHeader)
	}
	members, err := readObject(header)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrHeader, err)
	}

	f := &File{}
	spans := make([]span, 0, len(members))
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if seen[m.key] {
			if m.key == metadataKey {
				return nil, nil, fmt.Errorf("%w: %s appears twice", ErrMetadata, metadataKey)
			}
			return nil, nil, fmt.Errorf("%w: tensor %q", ErrDuplicate, m.key)
		}
		seen[m.key] = true
		if m.key == metadataKey {
			if f.Metadata, err = decodeMetadata(m.raw); err != nil {
				return nil, nil, err
			}
			continue
		}
		t, begin, end, err := decodeEntry(m.key, m.raw, dataLen)
		if err != nil {
			return nil, nil, err
		}
		f.Tensors = append(f.Tensors, t)
		spans = append(spans, span{begin, end})
	}

	// File order: by offset, zero-length tensors before a tensor starting at
	// the same offset, ties broken by name so the order is deterministic.
	idx := make([]int, len(f.Tensors))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(i, j int) int {
		if c := spans[i].begin - spans[j].begin; c != 0 {
			return c
		}
		if c := spans[i].end - spans[j].end; c != 0 {
			return c
		}
		return bytes.Compare([]byte(f.Tensors[i].Name), []byte(f.Tensors[j].Name))
	})
	sorted := make([]Tensor, len(idx))
	sortedSpans := make([]span, len(idx))
	pos, prev := 0, ""
	for k, i := range idx {
		s, name := spans[i], f.Tensors[i].Name
		switch {
		case s.begin < pos:
			return nil, nil, fmt.Errorf("%w: tensor %q [%d, %d) overlaps tensor %q ending at %d", ErrOffsets, name, s.begin, s.end, prev, pos)
		case s.begin > pos:
			return nil, nil, fmt.Errorf("%w: gap in data section at [%d, %d) before tensor %q", ErrOffsets, pos, s.begin, name)
		}
		pos, prev = s.end, name
		sorted[k], sortedSpans[k] = f.Tensors[i], s
	}
	if int64(pos) != dataLen {
		return nil, nil, fmt.Errorf("%w: tensors cover %d bytes of a %d-byte data section", ErrOffsets, pos, dataLen)
	}
	f.Tensors = sorted
	return f, sortedSpans, nil
}

// member is one key and raw value of a JSON object, in input order.
type member struct {
	key string
	raw json.RawMessage
}

// readObject parses data as exactly one JSON object followed only by
// whitespace and returns its members in order. Duplicate keys are kept for the
// caller to report.
func readObject(data []byte) ([]member, error) {
	ms, err := readMembers(data)
	if err == io.EOF {
		err = errors.New("unexpected end of JSON")
	}
	return ms, err
}

func readMembers(data []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("want a JSON object, got %s", describe(tok))
	}
	var ms []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("want an object key, got %s", describe(tok))
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("value of %q: %v", key, err)
		}
		ms = append(ms, member{key, raw})
	}
	if tok, err := dec.Token(); err != nil {
		return nil, err
	} else if tok != json.Delim('}') {
		return nil, fmt.Errorf("want end of object, got %s", describe(tok))
	}
	rest := data[dec.InputOffset():]
	if len(bytes.Trim(rest, " \t\r\n")) != 0 {
		return nil, fmt.Errorf("trailing data after the JSON object at byte %d", dec.InputOffset())
	}
	return ms, nil
}

func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return fmt.Sprintf("%q", string(v))
	case string:
		return fmt.Sprintf("string %q", v)
	case nil:
		return "null"
	default:
		return fmt.Sprintf("%T %v", v, v)
	}
}

func decodeMetadata(raw json.RawMessage) (map[string]string, error) {
	if string(raw) == "null" {
		return nil, nil
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, fmt.Errorf("%w: want an object, got %.40s", ErrMetadata, raw)
	}
	ms, err := readObject(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMetadata, err)
	}
	md := make(map[string]string, len(ms))
	for _, m := range ms {
		if _, dup := md[m.key]; dup {
			return nil, fmt.Errorf("%w: metadata key %q", ErrDuplicate, m.key)
		}
		v, ok := jsonString(m.raw)
		if !ok {
			return nil, fmt.Errorf("%w: value of %q is not a string: %.40s", ErrMetadata, m.key, m.raw)
		}
		md[m.key] = v
	}
	return md, nil
}

func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// jsonInts parses raw as an array of JSON integers that fit in int64.
func jsonInts(raw json.RawMessage) ([]int64, bool) {
	if len(raw) == 0 || raw[0] != '[' {
		return nil, false
	}
	// A shape or offset pair is a few numbers; a megabyte-long array in a
	// hostile header would cost gigabytes to unmarshal element by element.
	if len(raw) > maxIntArrayBytes {
		return nil, false
	}
	var elems []json.RawMessage
	if json.Unmarshal(raw, &elems) != nil {
		return nil, false
	}
	out := make([]int64, len(elems))
	for i, e := range elems {
		v, err := strconv.ParseInt(string(bytes.TrimSpace(e)), 10, 64)
		if err != nil {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}

// decodeEntry validates one tensor entry against a data section of dataLen
// bytes and returns the tensor (without Data) and its byte range.
func decodeEntry(name string, raw json.RawMessage, dataLen int64) (t Tensor, begin, end int, err error) {
	t.Name = name
	if len(raw) == 0 || raw[0] != '{' {
		return t, 0, 0, fmt.Errorf("%w: tensor %q: entry is not an object", ErrHeader, name)
	}
	ms, err := readObject(raw)
	if err != nil {
		return t, 0, 0, fmt.Errorf("%w: tensor %q: %v", ErrHeader, name, err)
	}
	var dtypeRaw, shapeRaw, offRaw json.RawMessage
	for _, m := range ms {
		var dst *json.RawMessage
		switch m.key {
		case "dtype":
			dst = &dtypeRaw
		case "shape":
			dst = &shapeRaw
		case "data_offsets":
			dst = &offRaw
		default:
			return t, 0, 0, fmt.Errorf("%w: tensor %q: unknown field %q", ErrHeader, name, m.key)
		}
		if *dst != nil {
			return t, 0, 0, fmt.Errorf("%w: tensor %q: field %q appears twice", ErrHeader, name, m.key)
		}
		*dst = m.raw
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"dtype", dtypeRaw}, {"shape", shapeRaw}, {"data_offsets", offRaw}} {
		if f.raw == nil {
			return t, 0, 0, fmt.Errorf("%w: tensor %q: missing field %q", ErrHeader, name, f.name)
		}
	}

	dt, ok := jsonString(dtypeRaw)
	if !ok {
		return t, 0, 0, fmt.Errorf("%w: tensor %q: dtype is not a string: %.40s", ErrDtype, name, dtypeRaw)
	}
	t.Dtype = Dtype(dt)
	size := t.Dtype.Size()
	if size == 0 {
		return t, 0, 0, fmt.Errorf("%w: tensor %q: %q", ErrDtype, name, dt)
	}

	dims, ok := jsonInts(shapeRaw)
	if !ok {
		return t, 0, 0, fmt.Errorf("%w: tensor %q: not an array of integers: %.40s", ErrShape, name, shapeRaw)
	}
	t.Shape = make([]int, len(dims))
	for i, d := range dims {
		if d < 0 {
			return t, 0, 0, fmt.Errorf("%w: tensor %q: dimension %d is negative (%d)", ErrShape, name, i, d)
		}
		if uint64(d) > math.MaxInt {
			return t, 0, 0, fmt.Errorf("%w: tensor %q: dimension %d (%d) overflows int", ErrShape, name, i, d)
		}
		t.Shape[i] = int(d)
	}
	nel, err := numElements(t.Shape)
	if err != nil {
		return t, 0, 0, fmt.Errorf("%w: tensor %q: %v", ErrShape, name, err)
	}
	nbytes, ok := mulInt(nel, size)
	if !ok {
		return t, 0, 0, fmt.Errorf("%w: tensor %q: byte size of shape %v of %s overflows", ErrShape, name, t.Shape, t.Dtype)
	}

	offs, ok := jsonInts(offRaw)
	if !ok || len(offs) != 2 {
		return t, 0, 0, fmt.Errorf("%w: tensor %q: want [begin, end] integers, got %.40s", ErrOffsets, name, offRaw)
	}
	b, e := offs[0], offs[1]
	switch {
	case b < 0 || e < b:
		return t, 0, 0, fmt.Errorf("%w: tensor %q: [%d, %d] is not an ordered pair of non-negative offsets", ErrOffsets, name, b, e)
	case e > dataLen:
		return t, 0, 0, fmt.Errorf("%w: tensor %q: end %d beyond the %d-byte data section", ErrOffsets, name, e, dataLen)
	case e-b != int64(nbytes):
		return t, 0, 0, fmt.Errorf("%w: tensor %q: [%d, %d] spans %d bytes but shape %v of %s needs %d", ErrOffsets, name, b, e, e-b, t.Shape, t.Dtype, nbytes)
	}
	return t, int(b), int(e), nil
}

// Encode writes tensors and metadata to w in canonical form: __metadata__
// first (omitted when metadata is empty), then the tensors sorted by name in
// both header and data, the header padded with spaces to make the data
// section 8-byte aligned. The same input always yields the same bytes.
// Encode validates every tensor first and writes nothing if one is invalid;
// it neither modifies nor retains its arguments.
func Encode(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	header, order, err := encodeHeader(tensors, metadata)
	if err != nil {
		return err
	}
	if err := writeHeader(w, header); err != nil {
		return err
	}
	for _, i := range order {
		if _, err := w.Write(tensors[i].Data); err != nil {
			return err
		}
	}
	return nil
}

// writeHeader writes the header's length (8 bytes, little-endian), then
// the header.
func writeHeader(w io.Writer, header []byte) error {
	var pre [8]byte
	binary.LittleEndian.PutUint64(pre[:], uint64(len(header)))
	if _, err := w.Write(pre[:]); err != nil {
		return err
	}
	_, err := w.Write(header)
	return err
}

// encodeHeader validates the tensors and returns the padded header and the
// tensor indices in name order.
func encodeHeader(tensors []Tensor, metadata map[string]string) ([]byte, []int, error) {
	order := make([]int, len(tensors))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		return bytes.Compare([]byte(tensors[i].Name), []byte(tensors[j].Name))
	})
	for k, i := range order {
		t := &tensors[i]
		if t.Name == metadataKey {
			return nil, nil, fmt.Errorf("%w: %q", ErrName, t.Name)
		}
		if !utf8.ValidString(t.Name) {
			return nil, nil, fmt.Errorf("%w: %q is not valid UTF-8", ErrName, t.Name)
		}
		if k > 0 && tensors[order[k-1]].Name == t.Name {
			return nil, nil, fmt.Errorf("%w: tensor %q", ErrDuplicate, t.Name)
		}
		if _, err := t.check(); err != nil {
			return nil, nil, err
		}
	}

	header, err := layoutHeader(tensors, order, func(i int) int { return len(tensors[i].Data) }, metadata)
	if err != nil {
		return nil, nil, err
	}
	return header, order, nil
}

// layoutHeader writes the padded header of tensors (their names, dtypes and
// shapes; not their data) laid out in the data section in order, tensor i
// taking size(i) bytes, with metadata.
func layoutHeader(tensors []Tensor, order []int, size func(i int) int, metadata map[string]string) ([]byte, error) {
	var h bytes.Buffer
	h.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			h.WriteByte(',')
		}
		first = false
	}
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k, v := range metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, fmt.Errorf("%w: key %q or its value is not valid UTF-8", ErrMetadata, k)
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		sep()
		writeJSONString(&h, metadataKey)
		h.WriteString(":{")
		for i, k := range keys {
			if i > 0 {
				h.WriteByte(',')
			}
			writeJSONString(&h, k)
			h.WriteByte(':')
			writeJSONString(&h, metadata[k])
		}
		h.WriteByte('}')
	}
	off := 0
	for _, i := range order {
		t := &tensors[i]
		sep()
		writeJSONString(&h, t.Name)
		h.WriteString(`:{"dtype":`)
		writeJSONString(&h, string(t.Dtype))
		h.WriteString(`,"shape":[`)
		for j, d := range t.Shape {
			if j > 0 {
				h.WriteByte(',')
			}
			h.WriteString(strconv.Itoa(d))
		}
		h.WriteString(`],"data_offsets":[`)
		h.WriteString(strconv.Itoa(off))
		h.WriteByte(',')
		off += size(i)
		h.WriteString(strconv.Itoa(off))
		h.WriteString("]}")
	}
	h.WriteByte('}')
	for (8+h.Len())%8 != 0 {
		h.WriteByte(' ')
	}
	if h.Len() > MaxHeaderSize {
		return nil, fmt.Errorf("%w: header of %d bytes exceeds the limit of %d", ErrHeaderSize, h.Len(), MaxHeaderSize)
	}
	return h.Bytes(), nil
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // cannot fail for a string
	buf.Write(b)
}

// F16ToFloat32 widens an IEEE 754 binary16 value exactly, subnormals,
// infinities and NaN payloads included.
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0: // zero or subnormal: mant * 2^-24, exact in float32
		v := float32(mant) * (1.0 / (1 << 24))
		return math.Float32frombits(math.Float32bits(v) | sign)
	case 0x1f: // infinity or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// F16FromFloat32 rounds f to the nearest IEEE 754 binary16 value, ties to
// even. Values beyond the largest finite half round to infinity, values below
// half the smallest subnormal to signed zero, and NaN becomes a quiet NaN.
func F16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15 // biased half exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Half subnormal h * 2^-24 with h = (1.mant * 2^23) >> (14 - e).
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		s := uint(14 - e)
		return sign | uint16(roundShift(m, s))
	}
	// Normal: a carry out of the mantissa correctly bumps the exponent, up to
	// infinity (0x7c00).
	return sign | uint16(uint32(e)<<10+roundShift(mant, 13))
}

// roundShift returns m >> s rounded to nearest, ties to even (1 <= s < 32).
func roundShift(m uint32, s uint) uint32 {
	q := m >> s
	rem := m & (1<<s - 1)
	half := uint32(1) << (s - 1)
	if rem > half || (rem == half && q&1 == 1) {
		q++
	}
	return q
}

// BF16ToFloat32 widens a bfloat16 value exactly.
func BF16ToFloat32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// BF16FromFloat32 rounds f to the nearest bfloat16 value, ties to even.
// Values beyond the largest finite bfloat16 round to infinity and NaN becomes
// a quiet NaN.
func BF16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x0040
	}
	// A carry out of the mantissa bumps the exponent, up to infinity; it
	// cannot reach the sign bit because b <= 0xff800000 here.
	return uint16(roundShift(b, 16))
}
