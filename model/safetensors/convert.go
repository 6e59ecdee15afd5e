package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// FloatTensor returns a tensor of dtype F32, F16 or BF16 holding data
// rounded to that dtype: F32 is exact (NaN payloads included), F16 and BF16
// round to nearest, ties to even (F16FromFloat32, BF16FromFloat32), so that
// a checkpoint read in a dtype can be written back in it. It panics on
// another dtype or if len(data) does not match shape, programmer errors.
func FloatTensor(name string, dtype Dtype, shape []int, data []float32) Tensor {
	checkLen("FloatTensor", name, shape, len(data))
	var b []byte
	switch dtype {
	case F32:
		b = make([]byte, 4*len(data))
		for i, v := range data {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
	case F16:
		b = make([]byte, 2*len(data))
		for i, v := range data {
			binary.LittleEndian.PutUint16(b[2*i:], F16FromFloat32(v))
		}
	case BF16:
		b = make([]byte, 2*len(data))
		for i, v := range data {
			binary.LittleEndian.PutUint16(b[2*i:], BF16FromFloat32(v))
		}
	default:
		panic(fmt.Sprintf("safetensors: FloatTensor(%q): dtype %q is not F32, F16 or BF16", name, dtype))
	}
	return Tensor{Name: name, Dtype: dtype, Shape: slices.Clone(shape), Data: b}
}

// CopyFloat32s converts the elements into dst as Float32s does, without
// allocating: dst must hold exactly as many elements as t (ErrDataSize
// otherwise). On error dst is left untouched.
func (t *Tensor) CopyFloat32s(dst []float32) error {
	n, err := t.check()
	if err != nil {
		return err
	}
	if len(dst) != n {
		return fmt.Errorf("%w: tensor %q: %d elements into a slice of %d", ErrDataSize, t.Name, n, len(dst))
	}
	d := t.Data
	switch t.Dtype {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToFloat32(binary.LittleEndian.Uint16(d[2*i:]))
		}
	case BF16:
		d = d[:2*len(dst)]
		for i := range dst {
			dst[i] = math.Float32frombits((uint32(d[2*i]) | uint32(d[2*i+1])<<8) << 16)
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])))
		}
	default:
		return fmt.Errorf("%w: tensor %q: %s to float32", ErrConvert, t.Name, t.Dtype)
	}
	return nil
}

// BF16Bits returns the raw bfloat16 bit patterns of a BF16 tensor, without
// conversion, in a new slice: for callers that keep a frozen base in
// bfloat16 (half the memory of float32) and widen it per use with
// BF16ToFloat32s. Other dtypes return ErrConvert.
func (t *Tensor) BF16Bits() ([]uint16, error) {
	n, err := t.check()
	if err != nil {
		return nil, err
	}
	if t.Dtype != BF16 {
		return nil, fmt.Errorf("%w: tensor %q: %s is not BF16", ErrConvert, t.Name, t.Dtype)
	}
	out := make([]uint16, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(t.Data[2*i:])
	}
	return out, nil
}

// CopyBF16Bits is BF16Bits into dst, without allocating: dst must hold
// exactly as many elements as t (ErrDataSize otherwise), which must be
// BF16 (ErrConvert otherwise). On error dst is left untouched.
func (t *Tensor) CopyBF16Bits(dst []uint16) error {
	n, err := t.check()
	if err != nil {
		return err
	}
	if t.Dtype != BF16 {
		return fmt.Errorf("%w: tensor %q: %s is not BF16", ErrConvert, t.Name, t.Dtype)
	}
	if len(dst) != n {
		return fmt.Errorf("%w: tensor %q: %d elements into a slice of %d", ErrDataSize, t.Name, n, len(dst))
	}
	d := t.Data[:2*n]
	for i := range dst {
		dst[i] = uint16(d[2*i]) | uint16(d[2*i+1])<<8
	}
	return nil
}

// BF16ToFloat32s widens every element of src into dst exactly, as
// BF16ToFloat32 does. It allocates nothing and panics if the lengths
// differ. dst and src must not overlap.
func BF16ToFloat32s(dst []float32, src []uint16) {
	if len(dst) != len(src) {
		panic(fmt.Sprintf("safetensors: BF16ToFloat32s: %d destination elements for %d", len(dst), len(src)))
	}
	// Four at a time: the re-sliced groups let the compiler drop the bounds
	// checks, about 1.5× the plain loop.
	i := 0
	for ; i+4 <= len(src); i += 4 {
		s, d := src[i:i+4:i+4], dst[i:i+4:i+4]
		d[0] = math.Float32frombits(uint32(s[0]) << 16)
		d[1] = math.Float32frombits(uint32(s[1]) << 16)
		d[2] = math.Float32frombits(uint32(s[2]) << 16)
		d[3] = math.Float32frombits(uint32(s[3]) << 16)
	}
	for ; i < len(src); i++ {
		dst[i] = math.Float32frombits(uint32(src[i]) << 16)
	}
}

// BF16FromFloat32s rounds every element of src into dst as BF16FromFloat32
// does: to nearest, ties to even, NaN to a quiet NaN. It allocates nothing
// and panics if the lengths differ. dst and src must not overlap.
func BF16FromFloat32s(dst []uint16, src []float32) {
	if len(dst) != len(src) {
		panic(fmt.Sprintf("safetensors: BF16FromFloat32s: %d destination elements for %d", len(dst), len(src)))
	}
	for i, f := range src {
		b := math.Float32bits(f)
		if b&0x7fffffff > 0x7f800000 {
			dst[i] = uint16(b>>16) | 0x0040
			continue
		}
		dst[i] = uint16((b + 0x7fff + (b>>16)&1) >> 16)
	}
}
