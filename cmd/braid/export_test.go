package main

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	parser "github.com/gpustack/gguf-parser-go"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
)

// readGGUFTensor parses the GGUF file at path with the independent reader
// and returns tensor name's values, decoded from F32 or F16, with the
// file's architecture and the tensor's type.
func readGGUFTensor(t *testing.T, path, name string) (arch string, typ parser.GGMLType, vals []float32) {
	t.Helper()
	f, err := parser.ParseGGUFFile(path)
	if err != nil {
		t.Fatalf("gguf-parser-go refuses %s: %v", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, ok := f.TensorInfos.Get(name)
	if !ok {
		t.Fatalf("%s has no tensor %s", path, name)
	}
	n := 1
	for _, d := range info.Dimensions {
		n *= int(d)
	}
	data := b[f.TensorDataStartOffset+int64(info.Offset):]
	vals = make([]float32, n)
	for i := range vals {
		switch info.Type {
		case parser.GGMLTypeF32:
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		case parser.GGMLTypeF16:
			vals[i] = safetensors.F16ToFloat32(binary.LittleEndian.Uint16(data[2*i:]))
		case parser.GGMLTypeQ8_0:
			blk := data[34*(i/32):]
			vals[i] = float32(int8(blk[2+i%32])) * safetensors.F16ToFloat32(binary.LittleEndian.Uint16(blk))
		default:
			t.Fatalf("%s: type %v", name, info.Type)
		}
	}
	return f.Architecture().Architecture, info.Type, vals
}

// paramOf is a checkpoint's parameter by Hugging Face name.
func paramOf(t *testing.T, ck *model.Checkpoint, name string) []float32 {
	t.Helper()
	for _, p := range ck.Config.Layout() {
		if p.Name == name {
			return ck.Params[p.Offset : p.Offset+p.Size]
		}
	}
	t.Fatalf("no parameter %s", name)
	return nil
}

// TestExportGGUF: `braid export --format gguf` writes the bundled base as
// one GGUF file of the type asked for, refuses to replace it without
// --overwrite, and with --adapter writes the merged model, which --format
// safetensors writes as a plain checkpoint.
func TestExportGGUF(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "base.gguf")
	log := mustRunOut(t, "export", "--format", "gguf", "--model", "../../models/base-en", "--out", out, "--type", "q8_0")
	if !strings.Contains(log, "wrote "+out+" (gguf q8_0, gpt2, 2768064 parameters") {
		t.Errorf("export says %q", log)
	}
	base, err := model.LoadCheckpoint("../../models/base-en")
	if err != nil {
		t.Fatal(err)
	}
	arch, typ, got := readGGUFTensor(t, out, "blk.5.ffn_down.weight")
	want := paramOf(t, base, "h.5.mlp.c_proj.weight")
	if arch != "gpt2" || typ != parser.GGMLTypeQ8_0 || len(got) != len(want) {
		t.Fatalf("%s %v %d values, want gpt2 q8_0 %d", arch, typ, len(got), len(want))
	}
	for i := range got {
		// Half a scale of max|w|/127 over the block, rounded up to float16.
		if !(math.Abs(float64(got[i]-want[i])) <= 0.5/127*1.001*blockMax(want, i)) {
			t.Fatalf("value %d: %g, original %g", i, got[i], want[i])
		}
	}

	if _, err := run(t, "export", "--format", "gguf", "--model", "../../models/base-en", "--out", out); err == nil || !strings.Contains(err.Error(), "exists: give --overwrite") {
		t.Errorf("export over an existing file: %v", err)
	}
	mustRunOut(t, "export", "--format", "gguf", "--model", "../../models/base-en", "--out", out, "--overwrite", "--type", "f32")
	if _, typ, _ := readGGUFTensor(t, out, "blk.5.ffn_down.weight"); typ != parser.GGMLTypeF32 {
		t.Errorf("--overwrite --type f32 left a %v tensor", typ)
	}
	for _, args := range [][]string{
		{"--out", dir},                         // a directory
		{"--out", out + "2", "--type", "q4_0"}, // an unknown type
		{"--out", out + "3", "--format", "onnx"},
		{"--out", filepath.Join(dir, "st"), "--format", "safetensors", "--type", "f16"},
	} {
		if _, err := run(t, append([]string{"export", "--model", "../../models/base-en", "--format", "gguf"}, args...)...); err == nil {
			t.Errorf("export %q: no error", args)
		}
	}

	// An adapter is merged first: the GGUF file and the safetensors export
	// hold the same merged weights as MergeAdapterFiles writes.
	merged := filepath.Join(dir, "merged")
	if err := model.MergeAdapterFiles("../../model/testdata/hf_tiny", "../../model/testdata/lora_tiny", merged); err != nil {
		t.Fatal(err)
	}
	ref, err := model.LoadCheckpoint(merged)
	if err != nil {
		t.Fatal(err)
	}
	withAdapter := filepath.Join(dir, "tiny.gguf")
	mustRunOut(t, "export", "--format", "gguf", "--model", "../../model/testdata/hf_tiny", "--adapter", "../../model/testdata/lora_tiny",
		"--out", withAdapter, "--type", "f32")
	_, _, got = readGGUFTensor(t, withAdapter, "blk.1.attn_qkv.weight")
	want = paramOf(t, ref, "h.1.attn.c_attn.weight")
	tiny, err := model.LoadCheckpoint("../../model/testdata/hf_tiny")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(want, paramOf(t, tiny, "h.1.attn.c_attn.weight")) {
		t.Fatal("the adapter leaves attn.c_attn as it was: the check below would not see it left out")
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("merged attn_qkv[%d] = %g, MergeAdapterFiles wrote %g", i, got[i], want[i])
		}
	}
	// Mistral's sliding window: written, with a note that llama.cpp has none.
	log = mustRunOut(t, "export", "--format", "gguf", "--model", "../../model/testdata/mistral_tiny", "--out", filepath.Join(dir, "mistral.gguf"))
	if !strings.Contains(log, "without its sliding window of 5") {
		t.Errorf("mistral export says %q, nothing about the sliding window", log)
	}

	st := filepath.Join(dir, "st")
	mustRunOut(t, "export", "--format", "safetensors", "--model", "../../model/testdata/hf_tiny", "--adapter", "../../model/testdata/lora_tiny", "--out", st)
	ck, err := model.LoadCheckpoint(st)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range ck.Params {
		if v != ref.Params[i] {
			t.Fatalf("safetensors export parameter %d = %g, merged %g", i, v, ref.Params[i])
		}
	}
}

// blockMax is max|w| over the Q8_0 block of 32 that holds value i.
func blockMax(w []float32, i int) float64 {
	m := 0.0
	for _, v := range w[i/32*32 : i/32*32+32] {
		m = max(m, math.Abs(float64(v)))
	}
	return m
}

// TestJobExportGGUF: `job export --format gguf` writes model.gguf beside
// the job's safetensors export, of the same weights; for a LoRA job, of
// its base with the adapter merged in, as --merged writes it.
func TestJobExportGGUF(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and runs jobs")
	}
	api := startCLINode(t, "gguf-test-token")
	pushDocs(t, api)
	base := byteBase(t, 32)
	for _, lora := range []bool{false, true} {
		args := []string{"job", "submit", "--api", api, "--model", base, "--dataset", "docs", "--steps", "2",
			"--global-batch", "2", "--micro-batch", "1", "--replicas", "1"}
		if lora {
			args = append(args, "--lora-rank", "2")
		}
		id := strings.TrimSpace(mustRunOut(t, args...))
		waitJob(t, api, id)
		exp, merged := filepath.Join(t.TempDir(), "exp"), filepath.Join(t.TempDir(), "merged")
		args = []string{"job", "export", id, "--out", exp, "--api", api, "--format", "gguf", "--type", "f32"}
		if lora {
			args = append(args, "--merged", merged)
		}
		log := mustRunOut(t, args...)
		if !strings.Contains(log, "wrote "+filepath.Join(exp, ggufFileName)+" (gguf f32") {
			t.Errorf("job export says %q", log)
		}
		ref := exp
		if lora {
			ref = merged
		}
		ck, err := model.LoadCheckpoint(ref)
		if err != nil {
			t.Fatal(err)
		}
		_, typ, got := readGGUFTensor(t, filepath.Join(exp, ggufFileName), "blk.0.attn_qkv.weight")
		want := paramOf(t, ck, "h.0.attn.c_attn.weight")
		if typ != parser.GGMLTypeF32 {
			t.Errorf("type %v", typ)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("lora %v: attn_qkv[%d] = %g, the exported model's %g", lora, i, got[i], want[i])
			}
		}
	}
}
