package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// rawFile assembles a file from a header string and a data section, without
// any validation, so that tests can build malformed inputs.
func rawFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func encode(t testing.TB, tensors []Tensor, md map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Encode(&buf, tensors, md); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return buf.Bytes()
}

// sampleTensors covers every supported dtype, a scalar and an empty tensor.
func sampleTensors() []Tensor {
	return []Tensor{
		F32Tensor("w", []int{2, 3}, []float32{1, -2, 3.5, 0, float32(math.Inf(1)), -1e-30}),
		I32Tensor("tokens", []int{4}, []int32{0, -1, math.MaxInt32, math.MinInt32}),
		{Name: "half", Dtype: F16, Shape: []int{3}, Data: []byte{0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00}},
		{Name: "brain", Dtype: BF16, Shape: []int{2}, Data: []byte{0x80, 0x3f, 0x00, 0xc0}},
		{Name: "long", Dtype: I64, Shape: []int{1, 2}, Data: binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, 5), uint64(1<<40))},
		{Name: "bytes", Dtype: U8, Shape: []int{3}, Data: []byte{1, 2, 255}},
		{Name: "scalar", Dtype: F64, Shape: []int{}, Data: binary.LittleEndian.AppendUint64(nil, math.Float64bits(math.Pi))},
		{Name: "empty", Dtype: F32, Shape: []int{0, 7}, Data: []byte{}},
		{Name: "flags", Dtype: BOOL, Shape: []int{2}, Data: []byte{0, 1}},
		{Name: "i8", Dtype: I8, Shape: []int{1}, Data: []byte{0x80}},
		{Name: "u16", Dtype: U16, Shape: []int{1}, Data: []byte{1, 2}},
		{Name: "i16", Dtype: I16, Shape: []int{1}, Data: []byte{1, 2}},
		{Name: "u32", Dtype: U32, Shape: []int{1}, Data: []byte{1, 2, 3, 4}},
		{Name: "u64", Dtype: U64, Shape: []int{1}, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
	}
}

// sameTensors reports whether a and b hold the same tensors, ignoring order.
func sameTensors(t testing.TB, a, b []Tensor) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("got %d tensors, want %d", len(a), len(b))
	}
	byName := map[string]Tensor{}
	for _, x := range b {
		byName[x.Name] = x
	}
	for _, x := range a {
		y, ok := byName[x.Name]
		switch {
		case !ok:
			t.Fatalf("tensor %q missing", x.Name)
		case x.Dtype != y.Dtype || !slices.Equal(x.Shape, y.Shape) || !bytes.Equal(x.Data, y.Data):
			t.Fatalf("tensor %q: got %s %v % x, want %s %v % x", x.Name, x.Dtype, x.Shape, x.Data, y.Dtype, y.Shape, y.Data)
		}
	}
}

func sameMetadata(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestRoundTrip(t *testing.T) {
	in := sampleTensors()
	md := map[string]string{"format": "pt", "quote\"d": "π ≈ 3.14", "": ""}
	b := encode(t, in, md)

	if (8+binary.LittleEndian.Uint64(b))%8 != 0 {
		t.Errorf("data section starts at %d, not 8-byte aligned", 8+binary.LittleEndian.Uint64(b))
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	sameTensors(t, f.Tensors, in)
	if !sameMetadata(f.Metadata, md) {
		t.Errorf("metadata %v, want %v", f.Metadata, md)
	}

	// Encode writes tensors sorted by name, so file order is name order.
	names := make([]string, len(f.Tensors))
	for i, x := range f.Tensors {
		names[i] = x.Name
	}
	if !slices.IsSorted(names) {
		t.Errorf("file order %v is not sorted by name", names)
	}

	// Canonical: order of the input and re-encoding do not change the bytes.
	rev := slices.Clone(in)
	slices.Reverse(rev)
	if b2 := encode(t, rev, md); !bytes.Equal(b, b2) {
		t.Error("encoding depends on input order")
	}
	if b3 := encode(t, f.Tensors, f.Metadata); !bytes.Equal(b, b3) {
		t.Error("decode then encode does not reproduce the bytes")
	}

	// Lookup.
	if x, ok := f.Tensor("tokens"); !ok || x.Dtype != I32 {
		t.Errorf("Tensor(tokens) = %v, %v", x, ok)
	}
	if _, ok := f.Tensor("nope"); ok {
		t.Error("Tensor(nope) found")
	}
}

func TestEncodeKnownBytes(t *testing.T) {
	b := encode(t, []Tensor{
		F32Tensor("b", []int{2}, []float32{1, -2}),
		I32Tensor("a", []int{}, []int32{7}),
	}, map[string]string{"k": "v"})
	header := `{"__metadata__":{"k":"v"},` +
		`"a":{"dtype":"I32","shape":[],"data_offsets":[0,4]},` +
		`"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`
	header += strings.Repeat(" ", (8-(len(header)%8))%8) // 8+len must be a multiple of 8
	want := rawFile(header, []byte{
		7, 0, 0, 0, // a = 7
		0x00, 0x00, 0x80, 0x3f, // 1.0
		0x00, 0x00, 0x00, 0xc0, // -2.0
	})
	if !bytes.Equal(b, want) {
		t.Fatalf("Encode:\n got %q\nwant %q", b, want)
	}
	// No metadata: the key is omitted.
	b = encode(t, []Tensor{I32Tensor("a", []int{1}, []int32{7})}, nil)
	if bytes.Contains(b, []byte(metadataKey)) {
		t.Errorf("empty metadata was written: %q", b)
	}
}

// A header written by the Python package: spaces, __metadata__ anywhere,
// offsets not in name order, padding.
func TestDecodeForeignLayout(t *testing.T) {
	h := `{"z": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}, ` +
		`"__metadata__": {"format": "pt"}, ` +
		`"a": {"data_offsets": [4, 8], "shape": [1], "dtype": "F32"}}   `
	f, err := Decode(rawFile(h, []byte{0x00, 0x3c, 0x00, 0x7c, 0, 0, 0x40, 0x40}))
	if err != nil {
		t.Fatal(err)
	}
	if f.Tensors[0].Name != "z" || f.Tensors[1].Name != "a" {
		t.Errorf("file order %q, %q; want z, a (by offset)", f.Tensors[0].Name, f.Tensors[1].Name)
	}
	z, _ := f.Tensors[0].Float32s()
	a, _ := f.Tensors[1].Float32s()
	if z[0] != 1 || !math.IsInf(float64(z[1]), 1) || a[0] != 3 {
		t.Errorf("z = %v, a = %v", z, a)
	}
	if f.Metadata["format"] != "pt" {
		t.Errorf("metadata %v", f.Metadata)
	}
}

func TestDecodeRejects(t *testing.T) {
	const ok = `"dtype":"F32","shape":[2],"data_offsets":[0,8]`
	data8 := make([]byte, 8)
	entry := func(body string) string { return `{"t":{` + body + `}}` }
	tests := []struct {
		name string
		file []byte
		want error
		msg  string // substring the error must contain
	}{
		// Framing.
		{"empty", nil, ErrTruncated, ""},
		{"seven bytes", make([]byte, 7), ErrTruncated, ""},
		{"header past end", append(binary.LittleEndian.AppendUint64(nil, 100), "{}"...), ErrHeaderSize, ""},
		{"header absurd", binary.LittleEndian.AppendUint64(nil, 1<<62), ErrHeaderSize, ""},
		{"header max uint64", binary.LittleEndian.AppendUint64(nil, math.MaxUint64), ErrHeaderSize, ""},

		// Header JSON.
		{"not json", rawFile(`{"t":`, nil), ErrHeader, ""},
		{"array", rawFile(`[1,2]`, nil), ErrHeader, ""},
		{"string", rawFile(`"x"`, nil), ErrHeader, ""},
		{"empty header", rawFile(``, nil), ErrHeader, ""},
		{"trailing garbage", rawFile(`{} x`, nil), ErrHeader, ""},
		{"two objects", rawFile(`{}{}`, nil), ErrHeader, ""},
		{"nul padding", rawFile("{}\x00", nil), ErrHeader, ""},
		{"invalid utf8", rawFile("{\"\xff\":{"+ok+"}}", data8), ErrHeader, ""},
		{"entry not object", rawFile(`{"t":[1]}`, nil), ErrHeader, `"t"`},
		{"missing dtype", rawFile(entry(`"shape":[2],"data_offsets":[0,8]`), data8), ErrHeader, `"t"`},
		{"missing shape", rawFile(entry(`"dtype":"F32","data_offsets":[0,8]`), data8), ErrHeader, `"t"`},
		{"missing offsets", rawFile(entry(`"dtype":"F32","shape":[2]`), data8), ErrHeader, `"t"`},
		{"unknown field", rawFile(entry(ok+`,"extra":1`), data8), ErrHeader, `"extra"`},
		{"field twice", rawFile(entry(ok+`,"dtype":"F32"`), data8), ErrHeader, `"dtype"`},
		{"field case", rawFile(entry(`"DTYPE":"F32","shape":[2],"data_offsets":[0,8]`), data8), ErrHeader, `"t"`},

		// Dtype.
		{"unknown dtype", rawFile(entry(`"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]`), data8), ErrDtype, `"t"`},
		{"lowercase dtype", rawFile(entry(`"dtype":"f32","shape":[2],"data_offsets":[0,8]`), data8), ErrDtype, `"t"`},
		{"dtype not string", rawFile(entry(`"dtype":4,"shape":[2],"data_offsets":[0,8]`), data8), ErrDtype, `"t"`},

		// Shape.
		{"negative dim", rawFile(entry(`"dtype":"F32","shape":[-2],"data_offsets":[0,8]`), data8), ErrShape, `"t"`},
		{"fractional dim", rawFile(entry(`"dtype":"F32","shape":[2.0],"data_offsets":[0,8]`), data8), ErrShape, `"t"`},
		{"null dim", rawFile(entry(`"dtype":"F32","shape":[null,2],"data_offsets":[0,8]`), data8), ErrShape, `"t"`},
		{"shape null", rawFile(entry(`"dtype":"F32","shape":null,"data_offsets":[0,4]`), data8[:4]), ErrShape, `"t"`},
		{"dim overflows int64", rawFile(entry(`"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]`), data8), ErrShape, `"t"`},
		{"product overflows", rawFile(entry(`"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]`), data8), ErrShape, `"t"`},
		{"bytes overflow", rawFile(entry(`"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]`), data8), ErrShape, `"t"`},

		// Offsets.
		{"offsets wrong size", rawFile(entry(`"dtype":"F32","shape":[3],"data_offsets":[0,8]`), data8), ErrOffsets, `"t"`},
		{"offsets reversed", rawFile(entry(`"dtype":"F32","shape":[0],"data_offsets":[8,0]`), data8), ErrOffsets, `"t"`},
		{"offsets negative", rawFile(entry(`"dtype":"F32","shape":[2],"data_offsets":[-8,0]`), data8), ErrOffsets, `"t"`},
		{"offsets past data", rawFile(entry(`"dtype":"F32","shape":[2],"data_offsets":[4,12]`), data8), ErrOffsets, `"t"`},
		{"offsets three", rawFile(entry(`"dtype":"F32","shape":[2],"data_offsets":[0,8,8]`), data8), ErrOffsets, `"t"`},
		{"offsets strings", rawFile(entry(`"dtype":"F32","shape":[2],"data_offsets":["0","8"]`), data8), ErrOffsets, `"t"`},
		{"overlap", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data8), ErrOffsets, "overlaps"},
		{"same range", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, data8), ErrOffsets, "overlaps"},
		{"gap", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data8), ErrOffsets, "gap"},
		{"trailing data", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, data8), ErrOffsets, "cover 4 bytes"},

		// Names and metadata.
		{"duplicate tensor", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data8), ErrDuplicate, `"a"`},
		{"duplicate escaped", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\u0061":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data8), ErrDuplicate, `"a"`},
		{"metadata number", rawFile(`{"__metadata__":{"lr":0.1}}`, nil), ErrMetadata, `"lr"`},
		{"metadata null value", rawFile(`{"__metadata__":{"lr":null}}`, nil), ErrMetadata, `"lr"`},
		{"metadata nested", rawFile(`{"__metadata__":{"o":{"a":"b"}}}`, nil), ErrMetadata, `"o"`},
		{"metadata array", rawFile(`{"__metadata__":["a"]}`, nil), ErrMetadata, ""},
		{"metadata string", rawFile(`{"__metadata__":"a"}`, nil), ErrMetadata, ""},
		{"metadata twice", rawFile(`{"__metadata__":{},"__metadata__":{}}`, nil), ErrMetadata, ""},
		{"metadata key twice", rawFile(`{"__metadata__":{"k":"a","k":"b"}}`, nil), ErrDuplicate, `"k"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Decode(tt.file)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %v, %v; want error %v", f, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %s", err, tt.msg)
			}
			t.Log(err)
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	for _, tc := range []struct{ name, header string }{
		{"empty object", `{}`},
		{"whitespace padding", "{} \t\r\n "},
		{"metadata null", `{"__metadata__":null}`},
		{"zero-size tensors share an offset", `{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[3,0],"data_offsets":[0,0]}}`},
		{"zero dim with huge dim", `{"a":{"dtype":"F64","shape":[0,9223372036854775807],"data_offsets":[0,0]}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(rawFile(tc.header, nil)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDecodeDataAliasesInputWithClippedCapacity(t *testing.T) {
	b := encode(t, []Tensor{
		F32Tensor("a", []int{1}, []float32{1}),
		F32Tensor("b", []int{1}, []float32{2}),
	}, nil)
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	a := f.Tensors[0].Data
	if cap(a) != 4 {
		t.Errorf("cap(Data) = %d, want 4 so appends cannot clobber the next tensor", cap(a))
	}
}

func TestEncodeRejects(t *testing.T) {
	good := F32Tensor("a", []int{1}, []float32{1})
	tests := []struct {
		name    string
		tensors []Tensor
		md      map[string]string
		want    error
	}{
		{"duplicate", []Tensor{good, good}, nil, ErrDuplicate},
		{"reserved name", []Tensor{{Name: metadataKey, Dtype: U8, Shape: []int{0}}}, nil, ErrName},
		{"invalid utf8 name", []Tensor{{Name: "\xff", Dtype: U8, Shape: []int{0}}}, nil, ErrName},
		{"unknown dtype", []Tensor{{Name: "x", Dtype: "F8_E5M2", Shape: []int{1}, Data: []byte{0}}}, nil, ErrDtype},
		{"negative dim", []Tensor{{Name: "x", Dtype: U8, Shape: []int{-1}}}, nil, ErrShape},
		{"short data", []Tensor{{Name: "x", Dtype: F32, Shape: []int{2}, Data: make([]byte, 7)}}, nil, ErrDataSize},
		{"bad metadata", []Tensor{good}, map[string]string{"k": "\xff"}, ErrMetadata},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Encode(&buf, tt.tensors, tt.md)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Encode = %v, want %v", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

func TestF16ToFloat32(t *testing.T) {
	tests := []struct {
		h    uint16
		want float64
	}{
		{0x0000, 0},
		{0x3c00, 1},
		{0xc000, -2},
		{0x3555, 0.333251953125},
		{0x7bff, 65504},                  // largest finite
		{0x0400, 6.103515625e-05},        // smallest normal 2^-14
		{0x03ff, 6.097555160522461e-05},  // largest subnormal
		{0x0001, 5.960464477539063e-08},  // smallest subnormal 2^-24
		{0x8001, -5.960464477539063e-08}, // negative subnormal
		{0x7c00, math.Inf(1)},
		{0xfc00, math.Inf(-1)},
	}
	for _, tt := range tests {
		if got := F16ToFloat32(tt.h); float64(got) != tt.want {
			t.Errorf("F16ToFloat32(%#04x) = %g, want %g", tt.h, got, tt.want)
		}
	}
	if got := F16ToFloat32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("F16ToFloat32(0x8000) = %g, want -0", got)
	}
	for _, h := range []uint16{0x7e00, 0x7c01, 0xfe00} {
		if got := F16ToFloat32(h); !math.IsNaN(float64(got)) {
			t.Errorf("F16ToFloat32(%#04x) = %g, want NaN", h, got)
		}
	}
}

func TestF16FromFloat32(t *testing.T) {
	tests := []struct {
		f    float64
		want uint16
	}{
		{1, 0x3c00},
		{-2, 0xc000},
		{65504, 0x7bff},
		{65519, 0x7bff},               // below the midpoint to 65536
		{65520, 0x7c00},               // midpoint, ties to even: infinity
		{1e10, 0x7c00},                // overflow
		{-1e10, 0xfc00},               // overflow
		{1 + 1.0/2048, 0x3c00},        // tie, even stays
		{1 + 3.0/2048, 0x3c02},        // tie, odd rounds up
		{1 + 1.0/2048 + 1e-7, 0x3c01}, // just above the tie
		{math.Ldexp(1, -24), 0x0001},  // smallest subnormal
		{math.Ldexp(1, -25), 0x0000},  // tie with zero: even
		{math.Ldexp(1.0000001, -25), 0x0001},
		{math.Ldexp(3, -25), 0x0002},      // 1.5 subnormal units: even
		{math.Ldexp(1, -26), 0x0000},      // underflow
		{-math.Ldexp(1, -30), 0x8000},     // underflow keeps sign
		{math.Ldexp(1023.5, -24), 0x0400}, // rounds up into the smallest normal
		{math.Ldexp(1, -14), 0x0400},      // smallest normal
		{6.097555160522461e-05, 0x03ff},   // largest subnormal
		{0.1, 0x2e66},                     // 0.0999755859375
		{math.Inf(1), 0x7c00},
		{math.Inf(-1), 0xfc00},
	}
	for _, tt := range tests {
		if got := F16FromFloat32(float32(tt.f)); got != tt.want {
			t.Errorf("F16FromFloat32(%g) = %#04x, want %#04x", tt.f, got, tt.want)
		}
	}
	if got := F16FromFloat32(float32(math.NaN())); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
		t.Errorf("F16FromFloat32(NaN) = %#04x, not a NaN", got)
	}
}

// Every finite and infinite half survives a round trip through float32, and
// rounding from float32 picks the nearer of the two neighbouring halves.
func TestF16Exhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := F16ToFloat32(h)
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := F16FromFloat32(f); got != h {
			t.Fatalf("round trip %#04x -> %g -> %#04x", h, f, got)
		}
		// Midpoint to the next half up (same sign) rounds to the even one.
		if h&0x7fff >= 0x7bff {
			continue
		}
		next := F16ToFloat32(h + 1)
		mid := (float64(f) + float64(next)) / 2 // exact in float64, and in float32
		want := h
		if h&1 == 1 {
			want = h + 1
		}
		if got := F16FromFloat32(float32(mid)); got != want {
			t.Fatalf("F16FromFloat32(%g) (midpoint of %#04x and %#04x) = %#04x, want %#04x", mid, h, h+1, got, want)
		}
	}
}

func TestBF16(t *testing.T) {
	tests := []struct {
		h uint16
		f float64
	}{
		{0x3f80, 1},
		{0xc000, -2},
		{0x7f80, math.Inf(1)},
		{0xff80, math.Inf(-1)},
		{0x0001, 9.183549615799121e-41}, // smallest subnormal 2^-133
		{0x7f7f, 3.3895313892515355e+38},
		{0x3dcd, 0.10009765625},
	}
	for _, tt := range tests {
		if got := BF16ToFloat32(tt.h); float64(got) != tt.f {
			t.Errorf("BF16ToFloat32(%#04x) = %g, want %g", tt.h, got, tt.f)
		}
		if got := BF16FromFloat32(float32(tt.f)); got != tt.h {
			t.Errorf("BF16FromFloat32(%g) = %#04x, want %#04x", tt.f, got, tt.h)
		}
	}
	rounding := []struct {
		f    float32
		want uint16
	}{
		{0.1, 0x3dcd},
		{1 + 1.0/256, 0x3f80},     // tie, even stays
		{1 + 3.0/256, 0x3f82},     // tie, odd rounds up
		{math.MaxFloat32, 0x7f80}, // overflow to infinity
		{-math.MaxFloat32, 0xff80},
	}
	for _, tt := range rounding {
		if got := BF16FromFloat32(tt.f); got != tt.want {
			t.Errorf("BF16FromFloat32(%g) = %#04x, want %#04x", tt.f, got, tt.want)
		}
	}
	for _, nan := range []uint32{0x7fc00000, 0x7f800001, 0xffffffff} {
		got := BF16FromFloat32(math.Float32frombits(nan))
		if !math.IsNaN(float64(BF16ToFloat32(got))) {
			t.Errorf("BF16FromFloat32(%#08x) = %#04x, not a NaN", nan, got)
		}
	}
}

func TestFloat32s(t *testing.T) {
	f, err := Decode(encode(t, sampleTensors(), nil))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want []float32
	}{
		{"w", []float32{1, -2, 3.5, 0, float32(math.Inf(1)), -1e-30}},
		{"half", []float32{1, -2, 5.960464477539063e-08}},
		{"brain", []float32{1, -2}},
		{"scalar", []float32{math.Pi}},
		{"empty", []float32{}},
	}
	for _, tt := range tests {
		x, _ := f.Tensor(tt.name)
		got, err := x.Float32s()
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%s.Float32s() = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	x, _ := f.Tensor("tokens")
	if _, err := x.Float32s(); !errors.Is(err, ErrConvert) {
		t.Errorf("I32 Float32s error = %v, want ErrConvert", err)
	}
	bad := Tensor{Name: "bad", Dtype: F32, Shape: []int{2}, Data: make([]byte, 4)}
	if _, err := bad.Float32s(); !errors.Is(err, ErrDataSize) {
		t.Errorf("short Data: %v, want ErrDataSize", err)
	}
}

func TestInt32s(t *testing.T) {
	f, err := Decode(encode(t, sampleTensors(), nil))
	if err != nil {
		t.Fatal(err)
	}
	x, _ := f.Tensor("tokens")
	if got, err := x.Int32s(); err != nil || !slices.Equal(got, []int32{0, -1, math.MaxInt32, math.MinInt32}) {
		t.Errorf("tokens.Int32s() = %v, %v", got, err)
	}
	x, _ = f.Tensor("long") // holds 1<<40
	if _, err := x.Int32s(); !errors.Is(err, ErrRange) {
		t.Errorf("long.Int32s() error = %v, want ErrRange", err)
	}
	fits := Tensor{Name: "fits", Dtype: I64, Shape: []int{2},
		Data: binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, uint64(math.MaxUint64)), math.MaxInt32)}
	if got, err := fits.Int32s(); err != nil || !slices.Equal(got, []int32{-1, math.MaxInt32}) {
		t.Errorf("fits.Int32s() = %v, %v", got, err)
	}
	x, _ = f.Tensor("w")
	if _, err := x.Int32s(); !errors.Is(err, ErrConvert) {
		t.Errorf("F32 Int32s error = %v, want ErrConvert", err)
	}
}

func TestConstructorsPanicOnShapeMismatch(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(r.(string), "safetensors: ") {
			t.Errorf("recover() = %v, want a safetensors: panic", r)
		}
	}()
	F32Tensor("x", []int{2, 2}, []float32{1, 2, 3})
}

func TestWriteFileReadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	in := sampleTensors()
	md := map[string]string{"step": "3"}
	if err := WriteFile(path, in, md); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, f.Tensors, in)
	if !sameMetadata(f.Metadata, md) {
		t.Errorf("metadata %v", f.Metadata)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, encode(t, in, md)) {
		t.Error("WriteFile bytes differ from Encode")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}

	// A failed write leaves the old file and no temporary behind.
	bad := []Tensor{{Name: "x", Dtype: F32, Shape: []int{2}, Data: nil}}
	if err := WriteFile(path, bad, nil); !errors.Is(err, ErrDataSize) || !strings.Contains(err.Error(), path) {
		t.Errorf("WriteFile(bad) = %v, want ErrDataSize naming the path", err)
	}
	if _, err := ReadFile(path); err != nil {
		t.Errorf("old file damaged: %v", err)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x.safetensors"), in, nil); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the file", len(entries))
	}

	// ReadFile errors name the path.
	corrupt := filepath.Join(dir, "corrupt.safetensors")
	os.WriteFile(corrupt, []byte{1, 2, 3}, 0o644)
	if _, err := ReadFile(corrupt); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), corrupt) {
		t.Errorf("ReadFile(corrupt) = %v", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "absent") {
		t.Errorf("ReadFile(absent) = %v", err)
	}
}

// FuzzDecode checks that Decode never panics and that anything it accepts
// survives Encode and Decode again unchanged, with Encode canonical.
func FuzzDecode(f *testing.F) {
	f.Add(encode(f, sampleTensors(), map[string]string{"a": "b"}))
	f.Add(encode(f, nil, nil))
	f.Add(rawFile(`{"z": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}, "__metadata__": {"k": "v"}}`, make([]byte, 4)))
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}`, nil))
	// BF16 and F16 NaNs (signalling, quiet, with payload), infinities,
	// subnormals and a value at the edge of overflow.
	f.Add(rawFile(`{"b":{"dtype":"BF16","shape":[6],"data_offsets":[0,12]},"h":{"dtype":"F16","shape":[2],"data_offsets":[12,16]}}`,
		[]byte{0x81, 0x7f, 0xc0, 0xff, 0x80, 0x7f, 0x01, 0x00, 0x7f, 0x7f, 0x01, 0x80, 0x01, 0x7c, 0xff, 0x03}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Decode(b)
		if err != nil {
			return
		}
		for i := range file.Tensors {
			x := &file.Tensors[i]
			x.Float32s()
			x.Int32s()
			checkFloatPaths(t, x)
		}
		var buf bytes.Buffer
		if err := Encode(&buf, file.Tensors, file.Metadata); err != nil {
			t.Fatalf("re-encode of a decoded file: %v", err)
		}
		again, err := Decode(buf.Bytes())
		if err != nil {
			t.Fatalf("decode of re-encoded file: %v", err)
		}
		sameTensors(t, again.Tensors, file.Tensors)
		if !sameMetadata(again.Metadata, file.Metadata) {
			t.Fatalf("metadata %v, want %v", again.Metadata, file.Metadata)
		}
		var buf2 bytes.Buffer
		if err := Encode(&buf2, again.Tensors, again.Metadata); err != nil || !bytes.Equal(buf.Bytes(), buf2.Bytes()) {
			t.Fatalf("Encode is not canonical (err %v)", err)
		}
	})
}

// checkFloatPaths: for a decoded float tensor, CopyFloat32s agrees with
// Float32s, writing the values back in the tensor's dtype (FloatTensor)
// reproduces its bytes (F16 and BF16 NaNs may come back as other NaNs), and
// for BF16 the raw bits and the bulk converters agree with the scalar ones.
func checkFloatPaths(t *testing.T, x *Tensor) {
	t.Helper()
	vals, err := x.Float32s()
	if err != nil {
		return
	}
	dst := make([]float32, len(vals))
	if err := x.CopyFloat32s(dst); err != nil || !sameBits(dst, vals) {
		t.Fatalf("tensor %q: CopyFloat32s differs from Float32s (%v)", x.Name, err)
	}
	if x.Dtype != F32 && x.Dtype != F16 && x.Dtype != BF16 {
		return
	}
	size := x.Dtype.Size()
	back := FloatTensor(x.Name, x.Dtype, x.Shape, vals)
	for i, v := range vals {
		a, b := x.Data[size*i:size*(i+1)], back.Data[size*i:size*(i+1)]
		if !bytes.Equal(a, b) && !(x.Dtype != F32 && math.IsNaN(float64(v))) {
			t.Fatalf("tensor %q element %d: % x written back as % x", x.Name, i, a, b)
		}
	}
	if x.Dtype != BF16 {
		return
	}
	bits, err := x.BF16Bits()
	if err != nil {
		t.Fatal(err)
	}
	wide := make([]float32, len(bits))
	BF16ToFloat32s(wide, bits)
	if !sameBits(wide, vals) {
		t.Fatalf("tensor %q: BF16ToFloat32s differs from Float32s", x.Name)
	}
	narrow := make([]uint16, len(vals))
	BF16FromFloat32s(narrow, vals)
	for i, h := range bits {
		if narrow[i] != h && !(math.IsNaN(float64(vals[i])) && narrow[i] == h|0x40) {
			t.Fatalf("tensor %q element %d: %#04x rounds back to %#04x", x.Name, i, h, narrow[i])
		}
	}
}

func sameBits(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

// TestDecodeRejectsHugeShapeArray: a shape of millions of dimensions is
// refused before it is unmarshalled (it would cost gigabytes).
func TestDecodeRejectsHugeShapeArray(t *testing.T) {
	shape := strings.Repeat("0,", 1<<20) + "0"
	header := `{"t":{"dtype":"F32","shape":[` + shape + `],"data_offsets":[0,0]}}`
	b := make([]byte, 8, 8+len(header))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	if _, err := Decode(b); err == nil {
		t.Fatal("no error")
	} else {
		t.Log(err)
	}
}

func TestReadFileRejectsNonRegular(t *testing.T) {
	if _, err := ReadFile(t.TempDir()); err == nil {
		t.Error("reading a directory: no error")
	}
}
