package allreduce

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"sort"
	"testing"
)

var allDtypes = []Dtype{FP32, BF16, FP16, INT8}

func TestCodecParseDtype(t *testing.T) {
	for _, d := range allDtypes {
		got, err := ParseDtype(d.String())
		if err != nil || got != d {
			t.Errorf("ParseDtype(%q) = %v, %v; want %v", d.String(), got, err, d)
		}
	}
	for _, s := range []string{"", "fp64", "int4", "f32"} {
		if _, err := ParseDtype(s); !errors.Is(err, ErrUnknownDtype) {
			t.Errorf("ParseDtype(%q) err = %v, want ErrUnknownDtype", s, err)
		}
	}
	if got := Dtype(9).String(); got != "Dtype(9)" {
		t.Errorf("Dtype(9).String() = %q", got)
	}
}

func TestCodecEncodedLen(t *testing.T) {
	for _, tc := range []struct {
		d    Dtype
		n    int
		want int
	}{
		{FP32, 0, 0}, {FP32, 3, 12},
		{BF16, 0, 0}, {BF16, 3, 6},
		{FP16, 1, 2}, {FP16, 1000, 2000},
		// INT8: a 4-byte scale per started block of 256.
		{INT8, 0, 0}, {INT8, 1, 5}, {INT8, 255, 259}, {INT8, 256, 260},
		{INT8, 257, 265}, {INT8, 1000, 1016},
	} {
		if got := tc.d.EncodedLen(tc.n); got != tc.want {
			t.Errorf("%v.EncodedLen(%d) = %d, want %d", tc.d, tc.n, got, tc.want)
		}
		if got := len(Encode(tc.d, nil, make([]float32, tc.n))); got != tc.want {
			t.Errorf("len(Encode(%v, %d zeros)) = %d, want %d", tc.d, tc.n, got, tc.want)
		}
	}
}

// testVectors returns seeded data of one magnitude class for each length the
// spec names, plus edge values mixed in.
func testVectors(seed int64) map[string][]float32 {
	rng := rand.New(rand.NewSource(seed))
	out := map[string][]float32{}
	mags := []struct {
		name string
		mag  float64
	}{
		{"zero", 0}, {"subnormal", 1e-40}, {"tiny", 1e-30}, {"fp16sub", 1e-6},
		{"unit", 1}, {"big", 3e4}, {"fp16over", 1e5}, {"huge", 1e37},
	}
	for _, m := range mags {
		for _, n := range []int{0, 1, 255, 256, 257, 1000} {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(m.mag * rng.NormFloat64())
			}
			out[fmt.Sprintf("%s/n=%d", m.name, n)] = x
		}
	}
	// Mixed magnitudes in one block, with exact zeros and negative zero.
	mixed := make([]float32, 1000)
	for i := range mixed {
		mixed[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.Intn(20)-10)))
	}
	mixed[3], mixed[4] = 0, float32(math.Copysign(0, -1))
	out["mixed/n=1000"] = mixed
	return out
}

// Spec: FP32 round trip is exact, bit for bit (NaN payloads included).
func TestCodecFP32Exact(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	x := make([]float32, 1000)
	for i := range x {
		x[i] = math.Float32frombits(rng.Uint32())
	}
	y := make([]float32, len(x))
	if err := Decode(FP32, y, Encode(FP32, nil, x)); err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if math.Float32bits(y[i]) != math.Float32bits(x[i]) {
			t.Fatalf("x[%d] = %#08x decoded as %#08x", i, math.Float32bits(x[i]), math.Float32bits(y[i]))
		}
	}
}

// The aligned fast paths (FP32 as a memory copy) and the element-by-element
// paths give the same bytes and values; DecodeAdd adds exactly what Decode
// writes.
func TestCodecAlignmentAndDecodeAdd(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	x := make([]float32, 777)
	base := make([]float32, len(x))
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 10)
		base[i] = float32(rng.NormFloat64())
	}
	for _, d := range allDtypes {
		aligned := Encode(d, make([]byte, 0, d.EncodedLen(len(x))), x)
		// Offset by one byte: never 4-byte aligned.
		odd := Encode(d, make([]byte, 1, 1+d.EncodedLen(len(x))), x)[1:]
		if !bytes.Equal(aligned, odd) {
			t.Fatalf("%v: aligned and unaligned encodings differ", d)
		}
		for _, src := range [][]byte{aligned, odd} {
			dec := make([]float32, len(x))
			if err := Decode(d, dec, src); err != nil {
				t.Fatal(err)
			}
			sum := append([]float32(nil), base...)
			if err := DecodeAdd(d, sum, src); err != nil {
				t.Fatal(err)
			}
			for i := range x {
				if want := base[i] + dec[i]; math.Float32bits(sum[i]) != math.Float32bits(want) {
					t.Fatalf("%v: DecodeAdd element %d = %v, want %v + %v = %v", d, i, sum[i], base[i], dec[i], want)
				}
			}
		}
		if err := DecodeAdd(d, make([]float32, 3), aligned); !errors.Is(err, ErrEncodedLength) {
			t.Errorf("%v: DecodeAdd with a wrong length: %v", d, err)
		}
	}
}

// Spec: every lossy dtype decodes within ErrorBound; Round equals decode∘encode
// bit for bit and is idempotent; Encode appends and is repeatable.
func TestCodecWithinErrorBound(t *testing.T) {
	for _, d := range allDtypes {
		for name, x := range testVectors(int64(d) + 7) {
			t.Run(d.String()+"/"+name, func(t *testing.T) {
				prefix := []byte{0xAA, 0xBB}
				enc := Encode(d, append([]byte(nil), prefix...), x)
				if !bytes.Equal(enc[:2], prefix) {
					t.Fatal("Encode overwrote dst's existing bytes")
				}
				if again := Encode(d, nil, x); !bytes.Equal(again, enc[2:]) {
					t.Fatal("Encode is not repeatable")
				}
				y := make([]float32, len(x))
				if err := Decode(d, y, enc[2:]); err != nil {
					t.Fatal(err)
				}
				var worst float64 // max |y-x| / bound, for the log
				for i := range x {
					absmax := blockAbsmax(d, x, i)
					bound := d.ErrorBound(x[i], absmax)
					if math.IsInf(float64(bound), 1) {
						if !math.IsInf(float64(y[i]), 0) || math.Signbit(float64(y[i])) != math.Signbit(float64(x[i])) {
							t.Fatalf("x[%d] = %g: bound is +Inf but decoded %g, want same-sign Inf", i, x[i], y[i])
						}
						continue
					}
					diff := math.Abs(float64(y[i]) - float64(x[i]))
					if diff > float64(bound) {
						t.Fatalf("x[%d] = %g (absmax %g) decoded %g: |err| %g > bound %g", i, x[i], absmax, y[i], diff, bound)
					}
					if bound > 0 {
						worst = max(worst, diff/float64(bound))
					}
				}
				t.Logf("max |err|/bound = %.4f", worst)

				r := append([]float32(nil), x...)
				Round(d, r)
				for i := range r {
					if math.Float32bits(r[i]) != math.Float32bits(y[i]) {
						t.Fatalf("Round: x[%d] = %g gave %g, Decode gave %g", i, x[i], r[i], y[i])
					}
				}
				rr := append([]float32(nil), r...)
				Round(d, rr)
				for i := range rr {
					if math.Float32bits(rr[i]) != math.Float32bits(r[i]) {
						t.Fatalf("Round not idempotent at %d: %g -> %g", i, r[i], rr[i])
					}
				}
			})
		}
	}
}

// blockAbsmax is max |x| over the INT8 block holding x[i] (unused elsewhere).
func blockAbsmax(d Dtype, x []float32, i int) float32 {
	if d != INT8 {
		return float32(math.Abs(float64(x[i])))
	}
	lo := i / Int8Block * Int8Block
	var m float64
	for _, v := range x[lo:min(lo+Int8Block, len(x))] {
		m = max(m, math.Abs(float64(v)))
	}
	return float32(m)
}

// Known bit patterns, including rounding ties, subnormals and overflow.
func TestCodecKnownBits(t *testing.T) {
	f := math.Float32frombits
	nan := float32(math.NaN())
	for _, tc := range []struct {
		d    Dtype
		x    float32
		want uint16
	}{
		// BF16: the top half of the float32 bits, nearest even.
		{BF16, 1, 0x3f80},
		{BF16, -2.5, 0xc020},
		{BF16, 0, 0x0000},
		{BF16, float32(math.Copysign(0, -1)), 0x8000},
		{BF16, f(0x3f808000), 0x3f80}, // tie, 0x3f80 even: down
		{BF16, f(0x3f818000), 0x3f82}, // tie, 0x3f81 odd: up
		{BF16, f(0x3f808001), 0x3f81}, // just above the tie
		{BF16, f(0x3f807fff), 0x3f80}, // just below the tie
		{BF16, f(0x00000001), 0x0000}, // smallest float32 subnormal underflows
		{BF16, f(0x00008000), 0x0000}, // tie at bf16's smallest subnormal: even
		{BF16, f(0x00018000), 0x0002},
		{BF16, math.MaxFloat32, 0x7f80}, // rounds past bf16's max: +Inf
		{BF16, f(0x7f7f7fff), 0x7f7f},   // largest value that stays finite
		{BF16, float32(math.Inf(-1)), 0xff80},
		// FP16: IEEE binary16, nearest even, subnormals, overflow to Inf.
		{FP16, 1, 0x3c00},
		{FP16, -2.5, 0xc100},
		{FP16, 65504, 0x7bff},
		{FP16, 65519.996, 0x7bff}, // below the midpoint to 65536
		{FP16, 65520, 0x7c00},     // tie, 0x7bff odd: up, to +Inf
		{FP16, -1e6, 0xfc00},
		{FP16, float32(math.Inf(1)), 0x7c00},
		{FP16, 1 + 0x1p-11, 0x3c00},       // tie, even: down
		{FP16, 1 + 3*0x1p-11, 0x3c02},     // tie, odd: up
		{FP16, 0x1p-14, 0x0400},           // smallest normal
		{FP16, 0x1p-14 - 0x1p-25, 0x0400}, // tie between 0x03ff and 0x0400: even 0x0400
		{FP16, 6e-5, 0x03ef},              // subnormal: 6e-5/2^-24 = 1006.6
		{FP16, 0x1p-24, 0x0001},           // smallest subnormal
		{FP16, 1e-7, 0x0002},              // 1.68·2^-24
		{FP16, 1e-8, 0x0000},              // below 2^-25: underflows to +0
		{FP16, -1e-8, 0x8000},             // to -0
		{FP16, 0x1p-25, 0x0000},           // tie: even 0
		{FP16, 3 * 0x1p-25, 0x0002},       // tie between 1 and 2: even 2
		{FP16, 0x1p-25 + 0x1p-40, 0x0001}, // just above the tie
	} {
		var got uint16
		enc := Encode(tc.d, nil, []float32{tc.x})
		got = uint16(enc[0]) | uint16(enc[1])<<8
		if got != tc.want {
			t.Errorf("%v(%g = %#08x) = %#04x, want %#04x", tc.d, tc.x, math.Float32bits(tc.x), got, tc.want)
		}
	}
	// NaN stays NaN, sign kept.
	for _, d := range []Dtype{BF16, FP16} {
		for _, x := range []float32{nan, -nan, f(0x7f800001), f(0xff800001)} {
			y := make([]float32, 1)
			if err := Decode(d, y, Encode(d, nil, []float32{x})); err != nil {
				t.Fatal(err)
			}
			if y[0] == y[0] || math.Signbit(float64(y[0])) != math.Signbit(float64(x)) {
				t.Errorf("%v: NaN %#08x decoded as %#08x", d, math.Float32bits(x), math.Float32bits(y[0]))
			}
		}
	}
}

// fp16Ref is a deliberately simple binary16 reference: the value of every
// bit pattern by Ldexp, and rounding by search over the sorted finite values.
type fp16Ref struct {
	vals []float64 // non-negative finite values, ascending; index = bit pattern
}

func newFP16Ref() *fp16Ref {
	r := &fp16Ref{}
	for h := range 0x7c00 {
		e, m := h>>10, float64(h&0x3ff)
		if e == 0 {
			r.vals = append(r.vals, math.Ldexp(m, -24))
		} else {
			r.vals = append(r.vals, math.Ldexp(1+m/1024, e-15))
		}
	}
	return r
}

func (r *fp16Ref) round(x float32) uint16 {
	a := math.Abs(float64(x))
	var sign uint16
	if math.Signbit(float64(x)) {
		sign = 0x8000
	}
	if a >= 65520 {
		return sign | 0x7c00
	}
	i := sort.SearchFloat64s(r.vals, a) // vals[i-1] < a ≤ vals[i]
	if i == len(r.vals) || i > 0 && (a-r.vals[i-1] < r.vals[i]-a || a-r.vals[i-1] == r.vals[i]-a && (i-1)%2 == 0) {
		i--
	}
	return sign | uint16(i)
}

// The fast FP16 path agrees with the simple reference on every half value,
// every rounding midpoint and its neighbours, and a sweep of float32 bits.
func TestCodecFP16MatchesReference(t *testing.T) {
	ref := newFP16Ref()
	for h, v := range ref.vals {
		if got := fromFP16(uint16(h)); float64(got) != v {
			t.Fatalf("fromFP16(%#04x) = %g, want %g", h, got, v)
		}
		if got := fromFP16(uint16(h) | 0x8000); float64(got) != -v || !math.Signbit(float64(got)) {
			t.Fatalf("fromFP16(%#04x) = %g, want %g", h|0x8000, got, -v)
		}
	}
	check := func(x float32) {
		if got, want := toFP16(x), ref.round(x); got != want {
			t.Fatalf("toFP16(%g = %#08x) = %#04x, reference %#04x", x, math.Float32bits(x), got, want)
		}
	}
	for h := 0; h+1 < len(ref.vals); h++ {
		mid := float32((ref.vals[h] + ref.vals[h+1]) / 2) // exact: a float32 has room
		b := math.Float32bits(mid)
		for _, x := range []float32{mid, math.Float32frombits(b - 1), math.Float32frombits(b + 1)} {
			check(x)
			check(-x)
		}
	}
	for b := uint32(0); b < 0x7f800000; b += 997 {
		check(math.Float32frombits(b))
	}
}

// INT8 layout: the scale, then q; the largest element maps to ±127.
func TestCodecInt8Layout(t *testing.T) {
	x := make([]float32, 300)
	x[0], x[1], x[2] = 1, -0.5, 0.25
	x[256], x[257] = -8, 2 // second, short block
	enc := Encode(INT8, nil, x)
	s0 := math.Float32frombits(uint32(enc[0]) | uint32(enc[1])<<8 | uint32(enc[2])<<16 | uint32(enc[3])<<24)
	if s0 > 1.0/127 || s0 < 1.0/127*(1-0x1p-15) {
		t.Errorf("block 0 scale = %g, want 1/127 truncated to 16 bits", s0)
	}
	if q := []int8{int8(enc[4]), int8(enc[5]), int8(enc[6]), int8(enc[7])}; q[0] != 127 || q[1] != -64 || q[2] != 32 || q[3] != 0 {
		t.Errorf("block 0 q = %v, want [127 -64 32 0]", q)
	}
	b1 := enc[4+256:]
	if len(b1) != 4+44 || int8(b1[4]) != -127 || int8(b1[5]) != 32 {
		t.Errorf("block 1: len %d q0 %d q1 %d, want 48 -127 32", len(b1), int8(b1[4]), int8(b1[5]))
	}
	// An all-zero block has scale 0.
	if enc := Encode(INT8, nil, make([]float32, 3)); !bytes.Equal(enc, make([]byte, 7)) {
		t.Errorf("zero block = %x, want all zero", enc)
	}
}

// A block holding NaN or ±Inf encodes to a NaN scale that Decode rejects,
// and Round turns that block (only) into NaN.
func TestCodecInt8NonFinite(t *testing.T) {
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		x := make([]float32, 300)
		x[10], x[260] = bad, 127
		err := Decode(INT8, make([]float32, 300), Encode(INT8, nil, x))
		if !errors.Is(err, ErrInvalidEncoding) {
			t.Errorf("block with %g: Decode err = %v, want ErrInvalidEncoding", bad, err)
		}
		Round(INT8, x)
		if x[0] == x[0] || x[255] == x[255] || x[260] != 127 {
			t.Errorf("Round with %g: x[0]=%g x[255]=%g x[260]=%g, want NaN NaN 127", bad, x[0], x[255], x[260])
		}
	}
}

// Spec: Decode returns an error, never panics, on wrong lengths or bad bytes.
func TestCodecDecodeErrors(t *testing.T) {
	for _, d := range allDtypes {
		for _, n := range []int{0, 1, 255, 256, 257} {
			good := d.EncodedLen(n)
			for _, l := range []int{good - 1, good + 1, good + 4, 0} {
				if l < 0 || l == good {
					continue
				}
				err := Decode(d, make([]float32, n), make([]byte, l))
				if !errors.Is(err, ErrEncodedLength) {
					t.Errorf("%v n=%d len=%d: err = %v, want ErrEncodedLength", d, n, l, err)
				}
			}
		}
	}
	if err := Decode(Dtype(4), nil, nil); !errors.Is(err, ErrUnknownDtype) {
		t.Errorf("Dtype(4): err = %v, want ErrUnknownDtype", err)
	}
	valid := Encode(INT8, nil, []float32{1, -0.5})
	for _, tc := range []struct {
		name  string
		scale uint32
		q     []int8
	}{
		{"nan scale", 0x7fc00000, []int8{127, 0}},
		{"inf scale", 0x7f800000, []int8{127, 0}},
		{"negative scale", 0xbc010000, []int8{127, 0}},
		{"negative zero scale", 0x80000000, []int8{0, 0}},
		{"scale with low bits", 0x3c010001, []int8{127, 0}},
		{"127*scale overflows", 0x7e000000, []int8{127, 0}},
		{"q = -128", 0x3c010000, []int8{127, -128}},
		{"max |q| below 127", 0x3c010000, []int8{100, 3}},
		{"zero scale, nonzero q", 0, []int8{1, 0}},
	} {
		b := append([]byte(nil), valid...)
		b[0], b[1], b[2], b[3] = byte(tc.scale), byte(tc.scale>>8), byte(tc.scale>>16), byte(tc.scale>>24)
		b[4], b[5] = byte(tc.q[0]), byte(tc.q[1])
		if err := Decode(INT8, make([]float32, 2), b); !errors.Is(err, ErrInvalidEncoding) {
			t.Errorf("%s: err = %v, want ErrInvalidEncoding", tc.name, err)
		} else {
			t.Log(err)
		}
	}
	if err := Decode(INT8, make([]float32, 2), valid); err != nil {
		t.Errorf("valid block: %v", err)
	}
}

// FuzzDecode: Decode never panics; whatever it accepts re-encodes to the same
// bytes (NaN payloads in BF16/FP16 aside) and decodes to the same values.
func FuzzDecode(f *testing.F) {
	for _, x := range [][]float32{{}, {1, -2.5, 65504, 1e-8}, make([]float32, 300)} {
		for _, d := range allDtypes {
			f.Add(uint8(d), uint16(len(x)), Encode(d, nil, x))
		}
	}
	rng := rand.New(rand.NewSource(3))
	x := make([]float32, 513)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 100)
	}
	for _, d := range allDtypes {
		f.Add(uint8(d), uint16(len(x)), Encode(d, nil, x))
	}
	f.Fuzz(func(t *testing.T, dt uint8, n uint16, data []byte) {
		d := Dtype(dt % 5) // includes one unknown dtype
		y := make([]float32, int(n)%2048)
		if err := Decode(d, y, data); err != nil {
			return
		}
		enc := Encode(d, nil, y)
		y2 := make([]float32, len(y))
		if err := Decode(d, y2, enc); err != nil {
			t.Fatalf("%v: re-encoded bytes rejected: %v", d, err)
		}
		for i := range y {
			if y[i] != y[i] && y2[i] != y2[i] {
				continue // NaN stays NaN; BF16/FP16 may quieten its payload
			}
			if math.Float32bits(y[i]) != math.Float32bits(y2[i]) {
				t.Fatalf("%v: element %d decoded %#08x, after re-encoding %#08x", d, i, math.Float32bits(y[i]), math.Float32bits(y2[i]))
			}
		}
		if d == FP32 || d == INT8 {
			if !bytes.Equal(enc, data) {
				t.Fatalf("%v: re-encoding changed canonical bytes", d)
			}
		}
	})
}

// BenchmarkCodec reports MB/s of float32 input (4 bytes per element) over a
// 64 MiB buffer, per dtype and direction.
func BenchmarkCodec(b *testing.B) {
	const n = 64 << 20 / 4
	rng := rand.New(rand.NewSource(1))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	y := make([]float32, n)
	for _, d := range allDtypes {
		buf := Encode(d, nil, x)
		b.Run(d.String()+"/encode", func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				buf = Encode(d, buf[:0], x)
			}
		})
		b.Run(d.String()+"/decode", func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				if err := Decode(d, y, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(d.String()+"/decode-add", func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				if err := DecodeAdd(d, y, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(d.String()+"/round", func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				copy(y, x)
				Round(d, y)
			}
		})
	}
}

// TestCodecBF16FastPathMatchesScalar: the vectorised bf16 paths (16 at a
// time, where the CPU has them) give toBF16's and fromBF16's bits for every
// kind of float32: random bit patterns (NaNs, infinities, subnormals) and
// exact ties, at lengths with and without a tail.
func TestCodecBF16FastPathMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for _, n := range []int{16, 17, 1000, 4099} {
		x := make([]float32, n)
		for i := range x {
			b := rng.Uint32()
			switch i % 4 {
			case 1:
				b = b&^0xffff | 0x8000 // a tie
			case 2:
				b = b&0x807fffff | 0x7f800000 // Inf or NaN
			}
			x[i] = math.Float32frombits(b)
		}
		enc := Encode(BF16, make([]byte, 0, 2*n), x)
		for i, v := range x {
			if got, want := binary.LittleEndian.Uint16(enc[2*i:]), toBF16(v); got != want {
				t.Fatalf("n=%d: element %d (%08x) encodes to %04x, want %04x", n, i, math.Float32bits(v), got, want)
			}
		}
		dec := make([]float32, n)
		if err := Decode(BF16, dec, enc); err != nil {
			t.Fatal(err)
		}
		sum := make([]float32, n)
		for i := range sum {
			sum[i] = float32(rng.NormFloat64())
		}
		base := slices.Clone(sum)
		if err := DecodeAdd(BF16, sum, enc); err != nil {
			t.Fatal(err)
		}
		for i := range x {
			h := binary.LittleEndian.Uint16(enc[2*i:])
			if math.Float32bits(dec[i]) != math.Float32bits(fromBF16(h)) {
				t.Fatalf("n=%d: element %d decodes to %08x", n, i, math.Float32bits(dec[i]))
			}
			if want := base[i] + fromBF16(h); math.Float32bits(sum[i]) != math.Float32bits(want) && !(sum[i] != sum[i] && want != want) {
				t.Fatalf("n=%d: element %d decode-adds to %v, want %v", n, i, sum[i], want)
			}
		}
	}
	t.Logf("vectorised bf16: %v", haveBF16Asm)
}
