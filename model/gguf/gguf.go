package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// The file format, as ggml's docs/gguf.md and gguf.cpp define version 3.
const (
	// Magic is the file's first four bytes, "GGUF".
	Magic = "GGUF"
	// Version is the format version Encode writes.
	Version = 3
	// Alignment is the alignment of the tensor data section and of every
	// tensor in it, in bytes: the default, which Build also records as
	// general.alignment.
	Alignment = 32
	// MaxNameBytes bounds a tensor name: ggml's GGML_MAX_NAME is 64 bytes
	// with the terminating NUL.
	MaxNameBytes = 63
)

// ErrEncode is wrapped by every error about what Encode was given.
var ErrEncode = errors.New("gguf: cannot encode")

// Type is a tensor's ggml type (enum ggml_type).
type Type uint32

// The tensor types Encode writes, with ggml's numbers.
const (
	F32  Type = 0
	F16  Type = 1
	Q8_0 Type = 8
	BF16 Type = 30
)

// Q8Block is the number of values in one Q8_0 block: a float16 scale d and
// 32 int8 values q, which stand for q·d.
const Q8Block = 32

// q8BlockBytes is one Q8_0 block's size: the scale and the 32 values.
const q8BlockBytes = 2 + Q8Block

// String is the type's name as llama.cpp's tools spell it.
func (t Type) String() string {
	switch t {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case Q8_0:
		return "q8_0"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// ParseType returns the type named s ("f32", "f16", "bf16" or "q8_0", as
// convert_hf_to_gguf.py's --outtype names them).
func ParseType(s string) (Type, error) {
	for _, t := range []Type{F32, F16, BF16, Q8_0} {
		if strings.EqualFold(s, t.String()) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("gguf: unknown tensor type %q: want f32, f16, bf16 or q8_0", s)
}

// FileType is general.file_type of a file whose matrices are of type t
// (enum llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_Q8_0, MOSTLY_BF16).
func (t Type) FileType() uint32 {
	switch t {
	case F16:
		return 1
	case Q8_0:
		return 7
	case BF16:
		return 32
	}
	return 0
}

// rowBytes is the size of n values of type t in a row, or an error if a
// Q8_0 row is not whole blocks.
func (t Type) rowBytes(n int) (int, error) {
	switch t {
	case F32:
		return 4 * n, nil
	case F16, BF16:
		return 2 * n, nil
	case Q8_0:
		if n%Q8Block != 0 {
			return 0, fmt.Errorf("%w: a q8_0 row holds whole blocks of %d values, this one %d", ErrEncode, Q8Block, n)
		}
		return n / Q8Block * q8BlockBytes, nil
	}
	return 0, fmt.Errorf("%w: tensor type %v", ErrEncode, t)
}

// Tensor is one tensor to write: its values in float32, converted to Type
// as they are written.
type Tensor struct {
	Name string
	// Shape is row-major, as PyTorch and safetensors give it: a matrix is
	// (rows, columns). The file records it innermost first (ggml's ne[0]
	// is the last entry here), as the converter does.
	Shape []int
	Type  Type
	Data  []float32 // len = the product of Shape; read, never modified
}

// KV is one metadata key and its value, of one of the Go types the
// format has: uint8, int8, uint16, int16, uint32, int32, uint64, int64,
// float32, float64, bool, string, or a slice of one of them but bool
// ([]string, []int32, []float32, ...).
type KV struct {
	Key   string
	Value any
}

// value types of the metadata (enum gguf_type).
const (
	typeUint8   uint32 = 0
	typeInt8    uint32 = 1
	typeUint16  uint32 = 2
	typeInt16   uint32 = 3
	typeUint32  uint32 = 4
	typeInt32   uint32 = 5
	typeFloat32 uint32 = 6
	typeBool    uint32 = 7
	typeString  uint32 = 8
	typeArray   uint32 = 9
	typeUint64  uint32 = 10
	typeInt64   uint32 = 11
	typeFloat64 uint32 = 12
)

// Encode writes a GGUF version 3 file with metadata kvs and tensors, in
// the order given, to w: the header, the metadata, the tensor table, then
// each tensor's values converted to its type (F16 and BF16 rounded to
// nearest even, Q8_0 as quantizeQ8 says), every tensor starting at a
// multiple of Alignment. If kvs sets general.alignment it must be the
// uint32 Alignment.
//
// Everything is checked before the first byte is written: names (unique,
// at most MaxNameBytes, keys non-empty), value types, shapes against
// data, Q8_0 rows of whole blocks. An error converting values (a Q8_0
// block whose scale overflows float16) can still come after w has been
// written to; WriteFile leaves no file behind then.
//
// Memory: besides w's buffer, one tensor row at a time in its file type.
func Encode(w io.Writer, kvs []KV, tensors []Tensor) error {
	offsets := make([]uint64, len(tensors))
	seenKey := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		if kv.Key == "" || seenKey[kv.Key] {
			return fmt.Errorf("%w: metadata key %q empty or repeated", ErrEncode, kv.Key)
		}
		seenKey[kv.Key] = true
		if _, err := valueType(kv.Value); err != nil {
			return fmt.Errorf("%w: metadata key %s: %w", ErrEncode, kv.Key, err)
		}
		if kv.Key == "general.alignment" && kv.Value != any(uint32(Alignment)) {
			return fmt.Errorf("%w: general.alignment = %v, Encode writes uint32(%d)", ErrEncode, kv.Value, Alignment)
		}
	}
	seen := make(map[string]bool, len(tensors))
	var offset uint64
	for i, t := range tensors {
		if t.Name == "" || len(t.Name) > MaxNameBytes || seen[t.Name] {
			return fmt.Errorf("%w: tensor name %q empty, longer than %d bytes or repeated", ErrEncode, t.Name, MaxNameBytes)
		}
		seen[t.Name] = true
		if len(t.Shape) == 0 || len(t.Shape) > 4 {
			return fmt.Errorf("%w: tensor %s has %d dimensions, want 1 to 4", ErrEncode, t.Name, len(t.Shape))
		}
		n := 1
		for _, d := range t.Shape {
			if d < 1 {
				return fmt.Errorf("%w: tensor %s has shape %v", ErrEncode, t.Name, t.Shape)
			}
			n *= d
		}
		if n != len(t.Data) {
			return fmt.Errorf("%w: tensor %s of shape %v has %d values, want %d", ErrEncode, t.Name, t.Shape, len(t.Data), n)
		}
		row, err := t.Type.rowBytes(t.Shape[len(t.Shape)-1])
		if err != nil {
			return fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		offsets[i] = offset
		offset = align(offset + uint64(row*(n/t.Shape[len(t.Shape)-1])))
	}

	bw := bufio.NewWriterSize(w, 1<<20)
	e := encoder{w: bw}
	e.raw([]byte(Magic))
	e.u32(Version)
	e.u64(uint64(len(tensors)))
	e.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		e.str(kv.Key)
		e.value(kv.Value)
	}
	for i, t := range tensors {
		e.str(t.Name)
		e.u32(uint32(len(t.Shape)))
		for j := len(t.Shape) - 1; j >= 0; j-- {
			e.u64(uint64(t.Shape[j]))
		}
		e.u32(uint32(t.Type))
		e.u64(offsets[i])
	}
	e.pad()
	var row []byte
	for _, t := range tensors {
		cols := t.Shape[len(t.Shape)-1]
		n, _ := t.Type.rowBytes(cols)
		if cap(row) < n {
			row = make([]byte, n)
		}
		row = row[:n]
		for r := 0; r < len(t.Data); r += cols {
			if err := encodeRow(row, t.Data[r:r+cols], t.Type); err != nil {
				return fmt.Errorf("tensor %s row %d: %w", t.Name, r/cols, err)
			}
			e.raw(row)
		}
		e.pad()
	}
	if e.err != nil {
		return e.err
	}
	return bw.Flush()
}

// align rounds n up to a multiple of Alignment.
func align(n uint64) uint64 { return (n + Alignment - 1) / Alignment * Alignment }

// valueType is the gguf_type of a metadata value, or an error for a Go
// type the format does not have.
func valueType(v any) (uint32, error) {
	switch v.(type) {
	case uint8:
		return typeUint8, nil
	case int8:
		return typeInt8, nil
	case uint16:
		return typeUint16, nil
	case int16:
		return typeInt16, nil
	case uint32:
		return typeUint32, nil
	case int32:
		return typeInt32, nil
	case uint64:
		return typeUint64, nil
	case int64:
		return typeInt64, nil
	case float32:
		return typeFloat32, nil
	case float64:
		return typeFloat64, nil
	case bool:
		return typeBool, nil
	case string:
		return typeString, nil
	case []uint8, []int8, []uint16, []int16, []uint32, []int32, []uint64, []int64, []float32, []float64, []string:
		return typeArray, nil
	}
	return 0, fmt.Errorf("value of Go type %T has no GGUF type", v)
}

// encoder writes little-endian values, keeping the first error and the
// count of bytes written (for padding).
type encoder struct {
	w   *bufio.Writer
	n   uint64
	err error
	b   [8]byte
}

func (e *encoder) raw(p []byte) {
	if e.err != nil {
		return
	}
	_, e.err = e.w.Write(p)
	e.n += uint64(len(p))
}

func (e *encoder) u8(v uint8)   { e.raw([]byte{v}) }
func (e *encoder) u16(v uint16) { binary.LittleEndian.PutUint16(e.b[:], v); e.raw(e.b[:2]) }
func (e *encoder) u32(v uint32) { binary.LittleEndian.PutUint32(e.b[:], v); e.raw(e.b[:4]) }
func (e *encoder) u64(v uint64) { binary.LittleEndian.PutUint64(e.b[:], v); e.raw(e.b[:8]) }

// str writes a gguf_string: a uint64 byte count and the bytes.
func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	if e.err == nil {
		_, e.err = e.w.WriteString(s)
		e.n += uint64(len(s))
	}
}

// pad writes zeros up to the next multiple of Alignment.
func (e *encoder) pad() {
	var zeros [Alignment]byte
	e.raw(zeros[:align(e.n)-e.n])
}

// value writes a metadata value's type and the value (valueType has
// accepted it).
func (e *encoder) value(v any) {
	t, _ := valueType(v)
	e.u32(t)
	switch v := v.(type) {
	case []uint8:
		array(e, typeUint8, v, e.u8)
	case []int8:
		array(e, typeInt8, v, func(x int8) { e.u8(uint8(x)) })
	case []uint16:
		array(e, typeUint16, v, e.u16)
	case []int16:
		array(e, typeInt16, v, func(x int16) { e.u16(uint16(x)) })
	case []uint32:
		array(e, typeUint32, v, e.u32)
	case []int32:
		array(e, typeInt32, v, func(x int32) { e.u32(uint32(x)) })
	case []uint64:
		array(e, typeUint64, v, e.u64)
	case []int64:
		array(e, typeInt64, v, func(x int64) { e.u64(uint64(x)) })
	case []float32:
		array(e, typeFloat32, v, func(x float32) { e.u32(math.Float32bits(x)) })
	case []float64:
		array(e, typeFloat64, v, func(x float64) { e.u64(math.Float64bits(x)) })
	case []string:
		array(e, typeString, v, e.str)
	default:
		e.scalar(v)
	}
}

// scalar writes a value that is not an array, without its type.
func (e *encoder) scalar(v any) {
	switch v := v.(type) {
	case uint8:
		e.u8(v)
	case int8:
		e.u8(uint8(v))
	case uint16:
		e.u16(v)
	case int16:
		e.u16(uint16(v))
	case uint32:
		e.u32(v)
	case int32:
		e.u32(uint32(v))
	case uint64:
		e.u64(v)
	case int64:
		e.u64(uint64(v))
	case float32:
		e.u32(math.Float32bits(v))
	case float64:
		e.u64(math.Float64bits(v))
	case bool:
		if v {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case string:
		e.str(v)
	}
}

// array writes an array's element type, length and elements.
func array[T any](e *encoder, elem uint32, v []T, put func(T)) {
	e.u32(elem)
	e.u64(uint64(len(v)))
	for _, x := range v {
		put(x)
	}
}
