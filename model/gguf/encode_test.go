package gguf_test

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	parser "github.com/gpustack/gguf-parser-go"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/gguf"
)

// parseBytes writes b to a file and parses it with the independent reader.
func parseBytes(t testing.TB, b []byte) ggufFile {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f.gguf")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseGGUFFile(path)
	if err != nil {
		t.Fatalf("gguf-parser-go refuses the file: %v", err)
	}
	return ggufFile{f, b}
}

// TestEncodeMetadataTypes: every value type the format has reads back
// with its type and value.
func TestEncodeMetadataTypes(t *testing.T) {
	kvs := []gguf.KV{
		{"u8", uint8(200)}, {"i8", int8(-100)}, {"u16", uint16(60000)}, {"i16", int16(-30000)},
		{"u32", uint32(4e9)}, {"i32", int32(-2e9)}, {"u64", uint64(1) << 60}, {"i64", int64(-1) << 60},
		{"f32", float32(1.5)}, {"f64", math.Pi}, {"yes", true}, {"no", false}, {"s", "héllo"},
		{"as", []string{"a", "", "bc"}}, {"ai32", []int32{-1, 2}}, {"af32", []float32{0.25}}, {"empty", []string{}},
		{"au8", []uint8{1, 2, 3}}, {"af64", []float64{-2}},
	}
	var buf bytes.Buffer
	if err := gguf.Encode(&buf, kvs, nil); err != nil {
		t.Fatal(err)
	}
	f := parseBytes(t, buf.Bytes())
	if n := len(f.Header.MetadataKV); n != len(kvs) {
		t.Fatalf("%d keys, want %d", n, len(kvs))
	}
	get := func(k string) parser.GGUFMetadataKV { return f.kv(t, k) }
	checks := []struct {
		key string
		ok  bool
	}{
		{"u8", get("u8").ValueUint8() == 200}, {"i8", get("i8").ValueInt8() == -100},
		{"u16", get("u16").ValueUint16() == 60000}, {"i16", get("i16").ValueInt16() == -30000},
		{"u32", get("u32").ValueUint32() == 4e9}, {"i32", get("i32").ValueInt32() == -2e9},
		{"u64", get("u64").ValueUint64() == 1<<60}, {"i64", get("i64").ValueInt64() == -1<<60},
		{"f32", get("f32").ValueFloat32() == 1.5}, {"f64", get("f64").ValueFloat64() == math.Pi},
		{"yes", get("yes").ValueBool()}, {"no", !get("no").ValueBool()}, {"s", get("s").ValueString() == "héllo"},
		{"as", strings.Join(get("as").ValueArray().ValuesString(), ",") == "a,,bc"},
		{"ai32", get("ai32").ValueArray().ValuesInt32()[1] == 2}, {"af32", get("af32").ValueArray().ValuesFloat32()[0] == 0.25},
		{"empty", get("empty").ValueArray().Len == 0}, {"au8", get("au8").ValueArray().ValuesUint8()[2] == 3},
		{"af64", get("af64").ValueArray().ValuesFloat64()[0] == -2},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s reads back as %v (%v)", c.key, get(c.key).Value, get(c.key).ValueType)
		}
	}
}

// TestEncodeRefuses: what Encode cannot write is refused before anything
// is written, naming the problem.
func TestEncodeRefuses(t *testing.T) {
	vec := func(name string, typ gguf.Type, shape ...int) gguf.Tensor {
		n := 1
		for _, d := range shape {
			n *= d
		}
		return gguf.Tensor{Name: name, Shape: shape, Type: typ, Data: make([]float32, n)}
	}
	for _, tc := range []struct {
		what    string
		kvs     []gguf.KV
		tensors []gguf.Tensor
		want    string
	}{
		{"repeated key", []gguf.KV{{"a", uint32(1)}, {"a", uint32(2)}}, nil, `key "a"`},
		{"empty key", []gguf.KV{{"", uint32(1)}}, nil, `key ""`},
		{"int value", []gguf.KV{{"a", 1}}, nil, "Go type int"},
		{"bool array", []gguf.KV{{"a", []bool{true}}}, nil, "Go type []bool"},
		{"other alignment", []gguf.KV{{"general.alignment", uint32(64)}}, nil, "general.alignment"},
		{"repeated tensor", nil, []gguf.Tensor{vec("w", gguf.F32, 2), vec("w", gguf.F32, 2)}, `"w"`},
		{"long name", nil, []gguf.Tensor{vec(strings.Repeat("n", 64), gguf.F32, 2)}, "longer than 63"},
		{"no dimensions", nil, []gguf.Tensor{vec("w", gguf.F32)}, "0 dimensions"},
		{"zero dimension", nil, []gguf.Tensor{vec("w", gguf.F32, 2, 0)}, "shape [2 0]"},
		{"short data", nil, []gguf.Tensor{{Name: "w", Shape: []int{2, 3}, Data: make([]float32, 5)}}, "5 values, want 6"},
		{"q8_0 row", nil, []gguf.Tensor{vec("w", gguf.Q8_0, 2, 48)}, "whole blocks of 32"},
		{"unknown type", nil, []gguf.Tensor{vec("w", gguf.Type(2), 32)}, "type(2)"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			var buf bytes.Buffer
			err := gguf.Encode(&buf, tc.kvs, tc.tensors)
			if !errors.Is(err, gguf.ErrEncode) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want ErrEncode naming %q", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("%d bytes written before the error", buf.Len())
			}
		})
	}
}

// TestQ8Blocks: Q8_0 of blocks at the edges of what it represents.
func TestQ8Blocks(t *testing.T) {
	block := func(f func(i int) float32) []float32 {
		x := make([]float32, 32)
		for i := range x {
			x[i] = f(i)
		}
		return x
	}
	for _, tc := range []struct {
		what string
		x    []float32
		err  string
	}{
		{"zeros", block(func(int) float32 { return 0 }), ""},
		{"one nonzero", block(func(i int) float32 { return float32(i / 31) }), ""},
		{"tiny (float16 subnormal scale)", block(func(i int) float32 { return float32(i) * 1e-9 }), ""},
		{"largest", block(func(i int) float32 { return float32(i-16) / 16 * 127 * 65504 }), ""},
		{"negative extreme", block(func(i int) float32 { return -float32(i) * 3.7 }), ""},
		{"too large", block(func(i int) float32 { return float32(i) * 127 * 65504 }), "beyond float16"},
		{"NaN", block(func(i int) float32 { return float32(math.NaN()) }), "not finite"},
		{"Inf", block(func(i int) float32 { return float32(math.Inf(-1)) }), "not finite"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			var buf bytes.Buffer
			err := gguf.Encode(&buf, nil, []gguf.Tensor{{Name: "w", Shape: []int{32}, Type: gguf.Q8_0, Data: tc.x}})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "tensor w") {
					t.Fatalf("error %v, want one naming tensor w and %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f := parseBytes(t, buf.Bytes())
			_, got, scales := f.tensor(t, "w")
			amax := 0.0
			for _, v := range tc.x {
				amax = max(amax, math.Abs(float64(v)))
			}
			if amax > 0 && !(float64(scales[0]) >= amax/127) {
				t.Errorf("scale %g below max|x|/127 = %g", scales[0], amax/127)
			}
			for i, v := range tc.x {
				if e := math.Abs(float64(got[i]) - float64(v)); !(e <= float64(scales[i])/2) {
					t.Errorf("x[%d] = %g reads back as %g (scale %g)", i, v, got[i], scales[i])
				}
			}
		})
	}
}

// TestWriteFileLeavesNothingOnError: a checkpoint that cannot be written
// (a NaN weight in Q8_0) leaves the target as it was and no temporary
// file.
func TestWriteFileLeavesNothingOnError(t *testing.T) {
	ck, err := model.LoadCheckpoint("../../models/base-en")
	if err != nil {
		t.Fatal(err)
	}
	ck.Params[len(ck.Params)/2] = float32(math.NaN())
	dir := t.TempDir()
	path := filepath.Join(dir, "model.gguf")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = gguf.WriteFile(path, ck, gguf.Options{Type: gguf.Q8_0})
	if err == nil || !strings.Contains(err.Error(), "not finite") {
		t.Fatalf("error %v, want one about a value that is not finite", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("target changed to %d bytes", len(b))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the target", len(entries))
	}
	// F16 writes the NaN as a NaN, as the converter would.
	if err := gguf.WriteFile(path, ck, gguf.Options{Type: gguf.F16}); err != nil {
		t.Fatal(err)
	}
}

// TestBuildRefuses: models llama.cpp would compute differently.
func TestBuildRefuses(t *testing.T) {
	ck, err := model.LoadCheckpoint("../testdata/qwen2_tiny")
	if err != nil {
		t.Fatal(err)
	}
	ck.Config.RopeScaling = model.RopeScaling{Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 64}
	if _, _, err := gguf.Build(ck, gguf.Options{}); err == nil || !strings.Contains(err.Error(), "rope_scaling") {
		t.Errorf("qwen2 with rope_scaling: error %v", err)
	}
	ck.Config.RopeScaling = model.RopeScaling{}
	ck.Params = ck.Params[1:]
	if _, _, err := gguf.Build(ck, gguf.Options{}); err == nil || !strings.Contains(err.Error(), "parameters") {
		t.Errorf("short parameters: error %v", err)
	}
}

// FuzzEncode: any set of tensors Encode accepts reads back through the
// independent reader with its names, dimensions, types and values (exact
// for F32, rounded for F16 and BF16, within half a block's scale for
// Q8_0).
func FuzzEncode(f *testing.F) {
	f.Add(uint64(1), uint8(3))
	f.Add(uint64(7), uint8(9))
	f.Fuzz(func(t *testing.T, seed uint64, n uint8) {
		r := rand.New(rand.NewPCG(seed, 2))
		types := []gguf.Type{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0}
		var tensors []gguf.Tensor
		var want []wantTensor
		for i := range int(n % 8) {
			typ := types[r.IntN(len(types))]
			cols := 1 + r.IntN(70)
			if typ == gguf.Q8_0 {
				cols = 32 * (1 + r.IntN(3))
			}
			shape := []int{cols}
			for range r.IntN(3) {
				shape = append([]int{1 + r.IntN(4)}, shape...)
			}
			size := 1
			dims := make([]uint64, len(shape))
			for j, d := range shape {
				size *= d
				dims[len(shape)-1-j] = uint64(d)
			}
			data := make([]float32, size)
			scale := math.Pow(10, float64(r.IntN(9)-4))
			for j := range data {
				data[j] = float32(scale * r.NormFloat64())
			}
			name := "t" + strings.Repeat("x", i)
			tensors = append(tensors, gguf.Tensor{Name: name, Shape: shape, Type: typ, Data: data})
			want = append(want, wantTensor{name, dims, parser.GGMLType(typ), func(j int) float32 { return data[j] }})
		}
		var buf bytes.Buffer
		if err := gguf.Encode(&buf, []gguf.KV{{"general.architecture", "fuzz"}}, tensors); err != nil {
			t.Fatal(err)
		}
		checkTensors(t, parseBytes(t, buf.Bytes()), want)
	})
}
