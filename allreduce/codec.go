package allreduce

// Wire codecs for the ring all-reduce.
//
// Every chunk that crosses the ring is a flat run of elements encoded as one
// Dtype, little-endian, with no header: the receiver knows the dtype and the
// element count from the ring's plan. Accumulation is always float32; a
// lossy dtype only changes what travels. The codecs are pure functions of
// their inputs (no state, no allocation beyond growing dst, safe for
// concurrent use on distinct slices) and use only IEEE float32/float64
// operations that Go rounds exactly, so every machine produces the same
// bytes and the same decoded values.
//
// Formats (n elements):
//
//	FP32  4n bytes: float32 bits.
//	BF16  2n bytes: the top 16 bits of float32, round to nearest even.
//	FP16  2n bytes: IEEE 754 binary16, round to nearest even, subnormals kept.
//	INT8  per block of Int8Block elements (the last may be short):
//	      float32 scale, then one int8 per element; value = q·scale.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unsafe"
)

// Codec errors. Decode wraps them with %w and the offending sizes or block.
var (
	// ErrUnknownDtype is returned for a Dtype or name outside FP32..INT8.
	ErrUnknownDtype = errors.New("allreduce: unknown dtype")
	// ErrEncodedLength is returned when the byte count does not match
	// Dtype.EncodedLen of the destination length.
	ErrEncodedLength = errors.New("allreduce: encoded length mismatch")
	// ErrInvalidEncoding is returned for bytes no encoder produces, such as
	// a negative, non-finite or non-canonical INT8 scale.
	ErrInvalidEncoding = errors.New("allreduce: invalid encoding")
)

// Dtype is the element type on the wire; accumulation is always float32.
type Dtype uint8

// Wire element types.
const (
	FP32 Dtype = iota // exact
	BF16              // bfloat16, round to nearest even
	FP16              // IEEE binary16, round to nearest even, overflow to ±Inf
	INT8              // blockwise absmax int8 with a float32 scale per block
)

// Int8Block is the number of elements sharing one float32 scale in INT8.
const Int8Block = 256

// ParseDtype parses "fp32", "bf16", "fp16" or "int8" (case-insensitive).
func ParseDtype(s string) (Dtype, error) {
	switch strings.ToLower(s) {
	case "fp32":
		return FP32, nil
	case "bf16":
		return BF16, nil
	case "fp16":
		return FP16, nil
	case "int8":
		return INT8, nil
	}
	return 0, fmt.Errorf("%w %q (want fp32, bf16, fp16 or int8)", ErrUnknownDtype, s)
}

// String returns the name ParseDtype accepts, or "Dtype(N)" if d is unknown.
func (d Dtype) String() string {
	switch d {
	case FP32:
		return "fp32"
	case BF16:
		return "bf16"
	case FP16:
		return "fp16"
	case INT8:
		return "int8"
	}
	return fmt.Sprintf("Dtype(%d)", uint8(d))
}

func (d Dtype) valid() bool { return d <= INT8 }

// EncodedLen is the bytes Encode produces for n elements. It panics if n is
// negative or d is unknown (programmer error).
func (d Dtype) EncodedLen(n int) int {
	if n < 0 {
		panic(fmt.Sprintf("allreduce: EncodedLen of negative count %d", n))
	}
	switch d {
	case FP32:
		return 4 * n
	case BF16, FP16:
		return 2 * n
	case INT8:
		return n + 4*((n+Int8Block-1)/Int8Block)
	}
	panic(fmt.Sprintf("allreduce: EncodedLen of unknown %v", d))
}

// ErrorBound returns the bound on |decode(encode(x)) - x| for a finite element
// x whose block has absolute maximum absmax (|x| ≤ absmax; only INT8 uses
// absmax). The bounds, for round-to-nearest-even everywhere:
//
//	FP32  0.
//	BF16  max(2^-8·|x|, 2^-134): half an ulp of the 8-bit significand; the
//	      absolute floor is half bf16's smallest subnormal. |x| ≥ 0x1.fep127
//	      (the midpoint above bf16's largest finite value) rounds to ±Inf:
//	      the bound is +Inf.
//	FP16  max(2^-11·|x|, 2^-25): half an ulp in the normal range; half the
//	      smallest subnormal 2^-24 below 2^-14, so |x| < 2^-25 (and 2^-25
//	      itself, a tie) decodes as ±0. FP16 does not saturate: |x| ≥ 65520
//	      (the midpoint above 65504) becomes ±Inf, like IEEE conversion and
//	      hardware F16C, so overflow is visible rather than silently clipped;
//	      the bound there is +Inf. Scale gradients (loss scaling) to fit.
//	INT8  absmax/254 + 2^-134: half a quantisation step. The scale is
//	      absmax/127 truncated to 16 significant bits (so scale ≤ absmax/127,
//	      and q·scale is exact in float32); q = x/scale rounded to nearest
//	      even, clamped to [-127, 127]. The 2^-134 term only matters when the
//	      scale is a float32 subnormal (absmax < 2^-119).
//
// Non-finite inputs are not covered: NaN stays NaN in BF16 and FP16, ±Inf
// stays ±Inf, and an INT8 block holding a NaN or ±Inf becomes a NaN scale
// (which Decode rejects).
func (d Dtype) ErrorBound(x, absmax float32) float32 {
	ax := float32(math.Abs(float64(x)))
	switch d {
	case FP32:
		return 0
	case BF16:
		if ax >= math.Float32frombits(0x7f7f8000) {
			return float32(math.Inf(1))
		}
		return max(ax*0x1p-8, 0x1p-134)
	case FP16:
		if ax >= 65520 {
			return float32(math.Inf(1))
		}
		return max(ax*0x1p-11, 0x1p-25)
	case INT8:
		return absmax/254 + 0x1p-134
	}
	panic(fmt.Sprintf("allreduce: ErrorBound of unknown %v", d))
}

// Encode appends the encoding of src to dst and returns it, growing dst at
// most once. Deterministic: the same input gives the same bytes on every
// machine. src is only read. It panics if d is unknown.
func Encode(d Dtype, dst []byte, src []float32) []byte {
	n := d.EncodedLen(len(src))
	off := len(dst)
	dst = slices.Grow(dst, n)[:off+n]
	out := dst[off:]
	switch d {
	case FP32:
		if w, ok := float32View(out); ok {
			copy(w, src) // the same bits, on a little-endian machine
			break
		}
		for i, v := range src {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	case BF16:
		if w, ok := uint16View(out); ok {
			w = w[:len(src)]
			done := 0
			if haveBF16Asm && len(src) >= 16 {
				done = len(src) &^ 15
				encodeBF16AVX512(&w[0], &src[0], done)
			}
			for i, v := range src[done:] {
				w[done+i] = toBF16(v)
			}
			break
		}
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], toBF16(v))
		}
	case FP16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], toFP16(v))
		}
	case INT8:
		for len(src) > 0 {
			blk := src[:min(Int8Block, len(src))]
			src = src[len(blk):]
			scale := int8Scale(blk)
			binary.LittleEndian.PutUint32(out, math.Float32bits(scale))
			q := out[4 : 4+len(blk)]
			out = out[4+len(blk):]
			if scale == 0 || scale != scale {
				clear(q)
				continue
			}
			for i, v := range blk {
				q[i] = byte(quantise(v, scale))
			}
		}
	}
	return dst
}

// Decode writes the n = len(dst) elements encoded in src into dst. It returns
// an error, never panics, if len(src) != d.EncodedLen(n), d is unknown, or the
// bytes are not something Encode produces (INT8 only: a negative, non-finite
// or non-canonical scale, q = -128, or a block whose largest |q| is not 127,
// or not 0 under a zero scale). On error dst may be partly written. src is
// only read.
func Decode(d Dtype, dst []float32, src []byte) error { return decode(d, dst, src, false) }

// DecodeAdd is Decode that adds the decoded elements into dst (dst[i] +=
// value) instead of storing them: the reduce step of reduce-scatter in one
// pass over the bytes. The same errors as Decode; on error dst may be
// partly updated.
func DecodeAdd(d Dtype, dst []float32, src []byte) error { return decode(d, dst, src, true) }

func decode(d Dtype, dst []float32, src []byte, add bool) error {
	if !d.valid() {
		return fmt.Errorf("%w %v", ErrUnknownDtype, d)
	}
	if want := d.EncodedLen(len(dst)); len(src) != want {
		return fmt.Errorf("%w: %v: %d bytes for %d elements, want %d",
			ErrEncodedLength, d, len(src), len(dst), want)
	}
	// put stores or accumulates one decoded element; the compiler inlines
	// it and hoists the branch on add out of each loop.
	put := func(i int, v float32) {
		if add {
			dst[i] += v
		} else {
			dst[i] = v
		}
	}
	switch d {
	case FP32:
		if w, ok := float32View(src); ok {
			if !add {
				copy(dst, w)
				break
			}
			for i, v := range w {
				dst[i] += v
			}
			break
		}
		for i := range dst {
			put(i, math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:])))
		}
	case BF16:
		if w, ok := uint16View(src); ok {
			w = w[:len(dst)]
			if haveBF16Asm && len(dst) >= 16 {
				done := len(dst) &^ 15
				decodeBF16AVX512(&dst[0], &w[0], done, add)
				dst, w = dst[done:], w[done:]
			}
			if add {
				for i, h := range w {
					dst[i] += fromBF16(h)
				}
			} else {
				for i, h := range w {
					dst[i] = fromBF16(h)
				}
			}
			break
		}
		for i := range dst {
			put(i, fromBF16(binary.LittleEndian.Uint16(src[2*i:])))
		}
	case FP16:
		for i := range dst {
			put(i, fromFP16(binary.LittleEndian.Uint16(src[2*i:])))
		}
	case INT8:
		for b, base := 0, 0; base < len(dst); b++ {
			n := min(Int8Block, len(dst)-base)
			sb := binary.LittleEndian.Uint32(src)
			q := src[4 : 4+n]
			src = src[4+n:]
			if err := checkInt8Block(sb, q); err != nil {
				return fmt.Errorf("%w: int8 block %d: %v", ErrInvalidEncoding, b, err)
			}
			scale := math.Float32frombits(sb)
			for i, v := range q {
				put(base+i, float32(int8(v))*scale)
			}
			base += n
		}
	}
	return nil
}

// littleEndian is true on machines whose float32 memory layout is the FP32
// wire format, where float32View applies.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// float32View is b seen as float32s, without copying, when the machine is
// little-endian and b is 4-byte aligned (the ring lays its frames out so
// that payloads are); ok is false otherwise and the caller converts
// element by element.
func float32View(b []byte) (f []float32, ok bool) {
	if !littleEndian || len(b) < 4 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 != 0 {
		return nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4), true
}

// fp32Bytes is FP32's encoding of f without a copy: its own bytes, on a
// little-endian machine; ok is false elsewhere.
func fp32Bytes(f []float32) (b []byte, ok bool) {
	if !littleEndian || len(f) == 0 {
		return nil, false
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(f))), 4*len(f)), true
}

// uint16View is b as uint16s without a copy when the machine is
// little-endian and b is 2-byte aligned (the bf16 and fp16 encodings);
// ok is false otherwise and the caller converts element by element.
func uint16View(b []byte) (w []uint16, ok bool) {
	if !littleEndian || len(b) < 2 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%2 != 0 {
		return nil, false
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/2), true
}

// Round replaces each element of x with decode(encode(x)), which is what
// every rank holds after the all-gather, without building the bytes. Like
// Decode's result it is idempotent: Round(Round(x)) == Round(x). An INT8
// block that Decode would reject (it held a NaN or ±Inf) becomes all NaN.
// It panics if d is unknown.
func Round(d Dtype, x []float32) {
	switch d {
	case FP32:
	case BF16:
		for i, v := range x {
			x[i] = fromBF16(toBF16(v))
		}
	case FP16:
		for i, v := range x {
			x[i] = fromFP16(toFP16(v))
		}
	case INT8:
		for len(x) > 0 {
			blk := x[:min(Int8Block, len(x))]
			x = x[len(blk):]
			scale := int8Scale(blk)
			if scale == 0 || scale != scale {
				for i := range blk {
					blk[i] = scale // 0, or NaN for a non-finite block
				}
				continue
			}
			for i, v := range blk {
				blk[i] = float32(quantise(v, scale)) * scale
			}
		}
	default:
		panic(fmt.Sprintf("allreduce: Round of unknown %v", d))
	}
}

// toBF16 rounds f to bfloat16, nearest even; NaN stays a (quiet) NaN of the
// same sign, and finite values beyond bf16's range round to ±Inf.
func toBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x0040
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func fromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// toFP16 rounds f to IEEE binary16, nearest even, keeping subnormals;
// |f| ≥ 65520 becomes ±Inf and NaN stays a quiet NaN of the same sign.
func toFP16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	a := b & 0x7fffffff
	switch {
	case a >= 0x38800000 && a < 0x477ff000: // normal: 2^-14 ≤ |f| < 65520
		a -= (127 - 15) << 23 // rebias the exponent
		a += 0xfff + (a>>13)&1
		return sign | uint16(a>>13)
	case a >= 0x477ff000: // overflow, Inf or NaN
		if a > 0x7f800000 {
			return sign | 0x7e00 | uint16(a>>13)&0x1ff
		}
		return sign | 0x7c00
	case a > 0x33000000: // subnormal: 2^-25 < |f| < 2^-14
		m := a&0x7fffff | 0x800000
		shift := 126 - a>>23 // value = m>>shift in units of 2^-24; 14..24
		q := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || rem == half && q&1 == 1 {
			q++ // may carry into the smallest normal, 0x0400, as it should
		}
		return sign | uint16(q)
	}
	return sign // |f| ≤ 2^-25 rounds to ±0 (2^-25 is a tie to even 0)
}

// fromFP16 converts IEEE binary16 to float32 exactly.
func fromFP16(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	e := uint32(h>>10) & 0x1f
	m := uint32(h & 0x3ff)
	switch e {
	case 0: // zero or subnormal: m·2^-24, exact in float32
		return math.Float32frombits(sign | math.Float32bits(float32(m)*0x1p-24))
	case 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | m<<13)
	}
	return math.Float32frombits(sign | (e+127-15)<<23 | m<<13)
}

// int8Scale returns the scale for one INT8 block: absmax/127 with its low 8
// significand bits cleared (16 significant bits, rounded toward zero), 0 for
// an all-zero block or one whose scale underflows, NaN if the block holds a
// NaN or ±Inf. Truncation keeps scale ≤ absmax/127, and 16 bits keep q·scale
// and 127·scale exact in float32, which makes Round idempotent and the bytes
// canonical.
func int8Scale(blk []float32) float32 {
	var amax uint32 // float32 bits of max |v|: for non-negative floats bit order is value order
	for _, v := range blk {
		amax = max(amax, math.Float32bits(v)&0x7fffffff)
	}
	if amax >= 0x7f800000 {
		return float32(math.NaN())
	}
	a := float64(math.Float32frombits(amax))
	sb := math.Float32bits(float32(a/127)) &^ 0xff
	if 127*float64(math.Float32frombits(sb)) > a { // float32(a/127) rounded up past a 16-bit value
		sb -= 0x100 // the next smaller 16-bit value (sb > 0 here)
	}
	return math.Float32frombits(sb)
}

// quantise returns v/scale rounded to nearest even, clamped to ±127, for a
// finite positive scale and finite v. The quotient is taken in float64,
// whose rounding error is far below the distance from any float32 quotient
// to a rounding tie, so q is the correctly rounded quotient.
func quantise(v, scale float32) int32 {
	r := math.RoundToEven(float64(v) / float64(scale))
	return int32(min(max(r, -127), 127))
}

// checkInt8Block reports why an INT8 block (scale bits sb, values q) is not
// something Encode produces, or nil.
func checkInt8Block(sb uint32, q []byte) error {
	scale := math.Float32frombits(sb)
	switch {
	case sb>>31 != 0:
		return fmt.Errorf("negative scale %v", scale)
	case sb >= 0x7f800000:
		return fmt.Errorf("non-finite scale %v", scale)
	case sb&0xff != 0 || math.IsInf(float64(127*scale), 0):
		return fmt.Errorf("non-canonical scale %#08x", sb)
	}
	var qmax int32
	for _, v := range q {
		a := int32(int8(v))
		if a == -128 {
			return errors.New("q = -128")
		}
		qmax = max(qmax, a, -a)
	}
	want := int32(127)
	if sb == 0 {
		want = 0
	}
	if qmax != want {
		return fmt.Errorf("max |q| = %d under scale %v, want %d", qmax, scale, want)
	}
	return nil
}
