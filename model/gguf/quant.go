package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/braidml/braid/model/safetensors"
)

// encodeRow writes the values x of one row into dst as type t (dst has
// t.rowBytes(len(x)) bytes).
func encodeRow(dst []byte, x []float32, t Type) error {
	switch t {
	case F32:
		for i, v := range x {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range x {
			binary.LittleEndian.PutUint16(dst[2*i:], safetensors.F16FromFloat32(v))
		}
	case BF16:
		for i, v := range x {
			binary.LittleEndian.PutUint16(dst[2*i:], safetensors.BF16FromFloat32(v))
		}
	case Q8_0:
		for b := 0; b < len(x); b += Q8Block {
			if err := quantizeQ8(dst[b/Q8Block*q8BlockBytes:][:q8BlockBytes], x[b:b+Q8Block]); err != nil {
				return fmt.Errorf("values %d..%d: %w", b, b+Q8Block-1, err)
			}
		}
	}
	return nil
}

// quantizeQ8 writes one Q8_0 block of the 32 values x into dst (34 bytes):
// the scale d as float16, then q_i = round(x_i/d) as int8, so that q_i·d
// stands for x_i.
//
// d is max|x_i|/127 rounded up to the next float16, and q_i is rounded
// against that stored d (half away from zero), so no q_i exceeds 127 and
// every |x_i − q_i·d| ≤ d/2. llama.cpp's quantize_row_q8_0 rounds d to
// nearest and q_i against the unrounded d instead; the two differ by at
// most one float16 step of d, and then by one in some q_i. A block of
// zeros has d = 0. Values that are not finite, or a scale beyond float16
// (max|x_i| > 127·65504), are an error: no block can represent them.
func quantizeQ8(dst []byte, x []float32) error {
	var amax float32
	for _, v := range x {
		a := float32(math.Abs(float64(v)))
		if !(a <= math.MaxFloat32) {
			return fmt.Errorf("gguf: q8_0: value %v is not finite", v)
		}
		amax = max(amax, a)
	}
	d := amax / 127
	h := safetensors.F16FromFloat32(d)
	if safetensors.F16ToFloat32(h) < d {
		h++ // the next float16 up: bits of positive float16s order like their values
	}
	scale := float64(safetensors.F16ToFloat32(h))
	if math.IsInf(scale, 0) {
		return fmt.Errorf("gguf: q8_0: largest magnitude %g needs a scale beyond float16", amax)
	}
	binary.LittleEndian.PutUint16(dst, h)
	for i, v := range x {
		var q float64
		if scale > 0 {
			q = max(-127, min(127, math.Round(float64(v)/scale)))
		}
		dst[2+i] = byte(int8(q))
	}
	return nil
}
