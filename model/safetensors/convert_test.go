package safetensors

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// naiveBF16 rounds f to bfloat16 the slow way: of the two bfloat16 values
// around f (truncated, and one unit further from zero), the nearer in
// float64 arithmetic, the even one on a tie. One unit past the largest
// finite value is 2^128 with an unbounded exponent, so overflow rounds to
// infinity exactly when IEEE 754 says it does. NaN is not handled.
func naiveBF16(f float32) uint16 {
	b := math.Float32bits(f)
	lo := uint16(b >> 16) // truncated: |lo| <= |f|
	hi := lo + 1          // next away from zero, same sign
	value := func(h uint16) float64 {
		if h&0x7fff == 0x7f80 { // infinity as the rounding candidate
			return math.Copysign(math.Ldexp(1, 128), float64(f))
		}
		return float64(BF16ToFloat32(h))
	}
	x := float64(f)
	dlo, dhi := math.Abs(x-value(lo)), math.Abs(value(hi)-x)
	switch {
	case dlo < dhi:
		return lo
	case dhi < dlo:
		return hi
	case lo&1 == 0:
		return lo
	}
	return hi
}

// Cases tied to the rounding rule: to nearest, ties to even, subnormals
// rounded like normals, overflow to infinity, NaN stays NaN.
func TestBF16FromFloat32Rounding(t *testing.T) {
	tiny := math.Float32frombits(0x00000001) // smallest float32 subnormal
	tests := []struct {
		name string
		bits uint32
		want uint16
	}{
		// Ties: exactly half a unit (0x8000 below the kept bits).
		{"tie, even stays", 0x3f808000, 0x3f80},
		{"tie, odd rounds up", 0x3f818000, 0x3f82},
		{"negative tie, even stays", 0xbf808000, 0xbf80},
		{"negative tie, odd rounds away", 0xbf818000, 0xbf82},
		{"just below a tie", 0x3f817fff, 0x3f81},
		{"just above a tie", 0x3f808001, 0x3f81},
		{"carry into the exponent", 0x3fffffff, 0x4000},
		// Subnormals: bfloat16 has float32's exponent range.
		{"smallest float32 subnormal", math.Float32bits(tiny), 0x0000},
		{"subnormal tie, even", 0x00008000, 0x0000},
		{"subnormal tie, odd", 0x00018000, 0x0002},
		{"subnormal above tie", 0x00008001, 0x0001},
		{"largest subnormal rounds to the smallest normal", 0x007fffff, 0x0080},
		{"negative subnormal keeps its sign", 0x80000001, 0x8000},
		{"smallest bf16 subnormal exact", 0x00010000, 0x0001},
		// Zeros, infinities and overflow.
		{"zero", 0x00000000, 0x0000},
		{"negative zero", 0x80000000, 0x8000},
		{"+inf", 0x7f800000, 0x7f80},
		{"-inf", 0xff800000, 0xff80},
		{"largest finite bf16 exact", 0x7f7f0000, 0x7f7f},
		{"below the midpoint to infinity", 0x7f7f7fff, 0x7f7f},
		{"midpoint to infinity, ties to even: infinity", 0x7f7f8000, 0x7f80},
		{"MaxFloat32 overflows", 0x7f7fffff, 0x7f80},
		{"-MaxFloat32 overflows", 0xff7fffff, 0xff80},
	}
	for _, tt := range tests {
		f := math.Float32frombits(tt.bits)
		if got := BF16FromFloat32(f); got != tt.want {
			t.Errorf("%s: BF16FromFloat32(%#08x) = %#04x, want %#04x", tt.name, tt.bits, got, tt.want)
		}
		if got := naiveBF16(f); got != tt.want {
			t.Errorf("%s: the naive reference gives %#04x, want %#04x: the test is wrong", tt.name, got, tt.want)
		}
		var bulk [1]uint16
		BF16FromFloat32s(bulk[:], []float32{f})
		if bulk[0] != tt.want {
			t.Errorf("%s: BF16FromFloat32s(%#08x) = %#04x, want %#04x", tt.name, tt.bits, bulk[0], tt.want)
		}
	}
	// NaN stays NaN, whatever its payload (a payload only in the low 16
	// bits would truncate to infinity without the quiet bit), and keeps
	// its sign.
	for _, nan := range []uint32{0x7fc00000, 0x7f800001, 0x7f80ffff, 0xff800001, 0xffffffff, 0x7fbfffff} {
		f := math.Float32frombits(nan)
		var bulk [1]uint16
		BF16FromFloat32s(bulk[:], []float32{f})
		for _, got := range []uint16{BF16FromFloat32(f), bulk[0]} {
			if !math.IsNaN(float64(BF16ToFloat32(got))) {
				t.Errorf("NaN %#08x became %#04x, not a NaN", nan, got)
			}
			if got>>15 != uint16(nan>>31) {
				t.Errorf("NaN %#08x became %#04x: sign lost", nan, got)
			}
		}
	}
}

// Every bfloat16 survives widening and rounding back; the midpoint between
// two neighbours rounds to the even one; and everything between a value and
// the midpoints around it rounds to that value.
func TestBF16Exhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := BF16ToFloat32(h)
		if math.IsNaN(float64(f)) {
			if h&0x7f80 != 0x7f80 || h&0x7f == 0 {
				t.Fatalf("BF16ToFloat32(%#04x) = NaN", h)
			}
			continue
		}
		if got := BF16FromFloat32(f); got != h {
			t.Fatalf("round trip %#04x -> %g -> %#04x", h, f, got)
		}
		if h&0x7fff >= 0x7f80 { // infinity: no next value
			continue
		}
		// f's bits with the low half set to the tie (0x8000) are the
		// midpoint between h and h+1 (same sign).
		mid := math.Float32frombits(uint32(h)<<16 | 0x8000)
		want := h + uint16(h&1)
		if got := BF16FromFloat32(mid); got != want {
			t.Fatalf("midpoint of %#04x and %#04x rounds to %#04x, want %#04x", h, h+1, got, want)
		}
		below := math.Float32frombits(uint32(h)<<16 | 0x7fff)
		above := math.Float32frombits(uint32(h)<<16 | 0x8001)
		if BF16FromFloat32(below) != h || BF16FromFloat32(above) != h+1 {
			t.Fatalf("around the midpoint of %#04x: %#04x, %#04x", h, BF16FromFloat32(below), BF16FromFloat32(above))
		}
	}
}

// The fast paths against the naive reference on every exponent, with
// random mantissas and the bit patterns near each tie.
func TestBF16AgainstNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var src []float32
	for e := range uint32(255) {
		for _, low := range []uint32{0, 1, 0x7fff, 0x8000, 0x8001, 0xffff} {
			hi := rng.Uint32() & 0x7f0000
			src = append(src, math.Float32frombits(e<<23|hi|low), math.Float32frombits(1<<31|e<<23|hi|low))
		}
		for range 64 {
			src = append(src, math.Float32frombits(rng.Uint32()&0x807fffff|e<<23))
		}
	}
	bulk := make([]uint16, len(src))
	BF16FromFloat32s(bulk, src)
	for i, f := range src {
		want := naiveBF16(f)
		if got := BF16FromFloat32(f); got != want {
			t.Fatalf("BF16FromFloat32(%#08x) = %#04x, naive %#04x", math.Float32bits(f), got, want)
		}
		if bulk[i] != want {
			t.Fatalf("BF16FromFloat32s(%#08x) = %#04x, naive %#04x", math.Float32bits(f), bulk[i], want)
		}
	}
	t.Logf("%d values checked", len(src))
}

// Rounding to bfloat16 and back moves a normal float32 by at most half a
// unit in the last place of bfloat16's 8-bit significand: a relative error
// of at most the unit roundoff 2^-8.
func TestBF16RoundTripBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const bound = 1.0 / 256 // 2^-8
	worst := 0.0
	src := make([]float32, 1<<16)
	for i := range src {
		// Normal magnitudes whose rounding cannot overflow.
		src[i] = float32(math.Ldexp(1+rng.Float64(), rng.IntN(250)-125)) * float32(1-2*rng.IntN(2))
	}
	bits := make([]uint16, len(src))
	back := make([]float32, len(src))
	BF16FromFloat32s(bits, src)
	BF16ToFloat32s(back, bits)
	for i, f := range src {
		rel := math.Abs(float64(back[i])-float64(f)) / math.Abs(float64(f))
		if !(rel <= bound) {
			t.Fatalf("%g -> %g: relative error %g > 2^-8", f, back[i], rel)
		}
		worst = max(worst, rel)
	}
	t.Logf("worst relative error %.3g (bound %.3g)", worst, bound)
	if worst < bound/2 {
		t.Errorf("worst relative error %.3g: the sample never came near the bound, it tests nothing", worst)
	}
}

// The bulk widening equals the scalar one bit for bit, for every length
// around the unrolled loop's groups of four.
func TestBF16ToFloat32sMatchesScalar(t *testing.T) {
	all := make([]uint16, 1<<16)
	for i := range all {
		all[i] = uint16(i)
	}
	for _, n := range []int{0, 1, 3, 4, 5, 7, 8, 9, len(all)} {
		dst := make([]float32, n)
		BF16ToFloat32s(dst, all[:n])
		for i, h := range all[:n] {
			if math.Float32bits(dst[i]) != math.Float32bits(BF16ToFloat32(h)) {
				t.Fatalf("n=%d: element %d (%#04x) = %#08x, scalar %#08x", n, i, h, math.Float32bits(dst[i]), math.Float32bits(BF16ToFloat32(h)))
			}
		}
	}
}

func TestBulkConvertersPanicOnLengthMismatch(t *testing.T) {
	for name, f := range map[string]func(){
		"BF16ToFloat32s":   func() { BF16ToFloat32s(make([]float32, 2), make([]uint16, 3)) },
		"BF16FromFloat32s": func() { BF16FromFloat32s(make([]uint16, 3), make([]float32, 2)) },
	} {
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestFloatTensor(t *testing.T) {
	vals := []float32{1, -2, 0.1, float32(math.Inf(-1)), 1e-40, 65520}
	for _, tt := range []struct {
		dtype Dtype
		want  []float32 // after a round trip through the dtype
	}{
		{F32, vals},
		{F16, []float32{1, -2, F16ToFloat32(F16FromFloat32(0.1)), float32(math.Inf(-1)), 0, float32(math.Inf(1))}},
		{BF16, []float32{1, -2, 0.10009765625, float32(math.Inf(-1)), BF16ToFloat32(BF16FromFloat32(1e-40)), 65536}},
	} {
		x := FloatTensor("x", tt.dtype, []int{2, 3}, vals)
		if x.Dtype != tt.dtype || len(x.Data) != 6*tt.dtype.Size() {
			t.Fatalf("%s: dtype %s, %d bytes", tt.dtype, x.Dtype, len(x.Data))
		}
		got, err := x.Float32s()
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%s: Float32s() = %v, %v; want %v", tt.dtype, got, err, tt.want)
		}
	}
	defer func() {
		if r := recover(); r == nil {
			t.Error("FloatTensor(I32) did not panic")
		}
	}()
	FloatTensor("x", I32, []int{1}, []float32{1})
}

func TestBF16BitsAndCopyFloat32s(t *testing.T) {
	x := Tensor{Name: "b", Dtype: BF16, Shape: []int{3}, Data: []byte{0x80, 0x3f, 0x00, 0xc0, 0xc0, 0x7f}}
	bits, err := x.BF16Bits()
	if err != nil || !slices.Equal(bits, []uint16{0x3f80, 0xc000, 0x7fc0}) {
		t.Fatalf("BF16Bits() = %#04x, %v", bits, err)
	}
	dst := make([]float32, 3)
	if err := x.CopyFloat32s(dst); err != nil || dst[0] != 1 || dst[1] != -2 || !math.IsNaN(float64(dst[2])) {
		t.Errorf("CopyFloat32s: %v, %v", dst, err)
	}
	if err := x.CopyFloat32s(make([]float32, 4)); !errors.Is(err, ErrDataSize) {
		t.Errorf("CopyFloat32s into 4: %v, want ErrDataSize", err)
	}
	f32 := F32Tensor("f", []int{1}, []float32{1})
	if _, err := f32.BF16Bits(); !errors.Is(err, ErrConvert) {
		t.Errorf("F32 BF16Bits: %v, want ErrConvert", err)
	}
	if allocs := testing.AllocsPerRun(10, func() { x.CopyFloat32s(dst) }); allocs != 0 {
		t.Errorf("CopyFloat32s allocates %v times", allocs)
	}
	raw := make([]uint16, 3)
	if err := x.CopyBF16Bits(raw); err != nil || !slices.Equal(raw, bits) {
		t.Errorf("CopyBF16Bits() = %#04x, %v, want BF16Bits' %#04x", raw, err, bits)
	}
	if err := x.CopyBF16Bits(make([]uint16, 2)); !errors.Is(err, ErrDataSize) {
		t.Errorf("CopyBF16Bits into 2: %v, want ErrDataSize", err)
	}
	if err := f32.CopyBF16Bits(raw[:1]); !errors.Is(err, ErrConvert) {
		t.Errorf("F32 CopyBF16Bits: %v, want ErrConvert", err)
	}
	short := Tensor{Name: "s", Dtype: BF16, Shape: []int{3}, Data: []byte{1, 2, 3}}
	if err := short.CopyBF16Bits(raw); err == nil {
		t.Error("CopyBF16Bits of a tensor with too few bytes succeeded")
	}
	if allocs := testing.AllocsPerRun(10, func() { x.CopyBF16Bits(raw) }); allocs != 0 {
		t.Errorf("CopyBF16Bits allocates %v times", allocs)
	}
}

// torch's float32 → bfloat16 conversion (round to nearest even, NaN to
// 0x7fc0) on special values and random ones, written by
// scripts/gen_sharded.py: an independent check of the rounding.
func TestBF16MatchesTorch(t *testing.T) {
	f, err := ReadFile("testdata/bf16_torch.safetensors")
	if err != nil {
		t.Fatalf("%v (regenerate with /usr/bin/python3 scripts/gen_sharded.py)", err)
	}
	src, _ := f.Tensor("f32")
	want, _ := f.Tensor("bf16")
	if src == nil || want == nil || src.Dtype != F32 || want.Dtype != BF16 {
		t.Fatal("fixture lacks F32 f32 and BF16 bf16")
	}
	vals, err := src.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	torch, err := want.BF16Bits()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]uint16, len(vals))
	BF16FromFloat32s(got, vals)
	for i := range vals {
		if got[i] != torch[i] && !(math.IsNaN(float64(vals[i])) && math.IsNaN(float64(BF16ToFloat32(got[i])))) {
			t.Errorf("element %d: %#08x rounds to %#04x, torch %#04x", i, math.Float32bits(vals[i]), got[i], torch[i])
		}
	}
	t.Logf("%d values agree with torch %s", len(vals), f.Metadata["torch"])
}

// FuzzBF16FromFloat32: the scalar and bulk roundings agree with the naive
// reference on any float32 bit pattern, and NaN stays NaN.
func FuzzBF16FromFloat32(f *testing.F) {
	for _, b := range []uint32{0, 0x3f808000, 0x3f818000, 0x7f7f8000, 0x00008000, 0x7f800001, 0xffffffff} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b uint32) {
		x := math.Float32frombits(b)
		got := BF16FromFloat32(x)
		var bulk [1]uint16
		BF16FromFloat32s(bulk[:], []float32{x})
		if bulk[0] != got {
			t.Fatalf("%#08x: bulk %#04x, scalar %#04x", b, bulk[0], got)
		}
		if math.IsNaN(float64(x)) {
			if !math.IsNaN(float64(BF16ToFloat32(got))) {
				t.Fatalf("NaN %#08x became %#04x", b, got)
			}
			return
		}
		if want := naiveBF16(x); got != want {
			t.Fatalf("%#08x: %#04x, naive %#04x", b, got, want)
		}
	})
}

// BenchmarkBF16ToFloat32s and BenchmarkBF16FromFloat32s report GB/s of
// float32 data (4 bytes an element) by size class: in cache, in L2/L3, in
// memory.
func BenchmarkBF16ToFloat32s(b *testing.B) {
	for _, n := range []int{1 << 10, 1 << 16, 1 << 24} {
		b.Run(sizeName(n), func(b *testing.B) {
			src, dst := make([]uint16, n), make([]float32, n)
			for i := range src {
				src[i] = uint16(i)
			}
			b.SetBytes(int64(4 * n))
			for b.Loop() {
				BF16ToFloat32s(dst, src)
			}
		})
	}
}

func BenchmarkBF16FromFloat32s(b *testing.B) {
	for _, n := range []int{1 << 10, 1 << 16, 1 << 24} {
		b.Run(sizeName(n), func(b *testing.B) {
			src, dst := make([]float32, n), make([]uint16, n)
			rng := rand.New(rand.NewPCG(1, 1))
			for i := range src {
				src[i] = float32(rng.NormFloat64())
			}
			b.SetBytes(int64(4 * n))
			for b.Loop() {
				BF16FromFloat32s(dst, src)
			}
		})
	}
}

// BenchmarkCopyFloat32sBF16 is the decode path from a tensor's
// little-endian bytes.
func BenchmarkCopyFloat32sBF16(b *testing.B) {
	const n = 1 << 24
	x := Tensor{Name: "x", Dtype: BF16, Shape: []int{n}, Data: make([]byte, 2*n)}
	dst := make([]float32, n)
	b.SetBytes(4 * n)
	for b.Loop() {
		if err := x.CopyFloat32s(dst); err != nil {
			b.Fatal(err)
		}
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMi", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKi", n>>10)
	}
	return fmt.Sprint(n)
}
