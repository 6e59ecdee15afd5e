package gguf_test

// llama.cpp itself, where one is at hand: scripts/llamacpp_check.cpp,
// built against a llama.cpp checkout (see its header), loads the files
// package gguf writes, tokenizes and computes logits. Run with
//
//	go test ./model/gguf -run TestLlamaCpp -count=1 -args -llamacpp /path/to/llamacpp_check
//
// Without -llamacpp these tests skip: llama.cpp is not a Go module and
// cannot be fetched here.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/gguf"
	"github.com/braidml/braid/model/hftok"
	"github.com/braidml/braid/model/safetensors"
)

var llamaCpp = flag.String("llamacpp", "", "path to scripts/llamacpp_check.cpp built against llama.cpp: check GGUF files with llama.cpp itself")

// llamaCppRun runs the check tool and returns the numbers it prints, one a
// line.
func llamaCppRun(t *testing.T, args ...string) []float64 {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(*llamaCpp, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("llama.cpp %q: %v\n%s", args, err, stderr.Bytes())
	}
	var vals []float64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		v, err := strconv.ParseFloat(sc.Text(), 64)
		if err != nil {
			t.Fatalf("llama.cpp printed %q", sc.Text())
		}
		vals = append(vals, v)
	}
	return vals
}

// writeIDs writes ids one a line, as the check tool reads them.
func writeIDs(t *testing.T, ids []int32) string {
	t.Helper()
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintln(&b, id)
	}
	path := filepath.Join(t.TempDir(), "ids.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLlamaCppLogits: llama.cpp computes, from the F32 files of the
// fixtures, the logits PyTorch computed in float64 from the Hugging Face
// files (reference.safetensors), each sequence of the batch on its own.
// llama.cpp's llama architecture has no sliding window, so Mistral's
// logits agree only at positions within the window.
func TestLlamaCppLogits(t *testing.T) {
	if *llamaCpp == "" {
		t.Skip("no -llamacpp")
	}
	for _, tc := range []struct {
		dir    string
		window int     // positions compared; 0: all
		tol    float64 // bound on |llama.cpp − PyTorch|
	}{
		// ggml computes GELU from a float16 table (GGML_GELU_FP16 in
		// ggml-cpu.c), which moves GPT-2's logits by about 1e-3.
		{"hf_tiny", 0, 2e-3},
		{"llama_tiny", 0, 1e-4}, {"qwen2_tiny", 0, 1e-4}, {"mistral_tiny", 5, 1e-4},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := filepath.Join("..", "testdata", tc.dir)
			ck, err := model.LoadCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "m.gguf")
			if err := gguf.WriteFile(path, ck, gguf.Options{Type: gguf.F32}); err != nil {
				t.Fatal(err)
			}
			ref, err := safetensors.ReadFile(filepath.Join(dir, "reference.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			tt, _ := ref.Tensor("tokens")
			lt, _ := ref.Tensor("logits")
			tokens, _ := tt.Int32s()
			logits, _ := lt.Float32s()
			B, T, V := tt.Shape[0], tt.Shape[1], ck.Config.Vocab
			worst, worstBeyond := 0.0, 0.0
			for b := range B {
				got := llamaCppRun(t, path, "logits", writeIDs(t, tokens[b*T:(b+1)*T]))
				if len(got) != T*V {
					t.Fatalf("llama.cpp gave %d logits, want %d", len(got), T*V)
				}
				for i, g := range got {
					d := math.Abs(g - float64(logits[b*T*V+i]))
					if tc.window > 0 && i/V >= tc.window {
						worstBeyond = max(worstBeyond, d)
						continue
					}
					if !(d <= worst) {
						worst = d
					}
				}
			}
			positions := T
			if tc.window > 0 {
				positions = tc.window
			}
			t.Logf("%s: max |llama.cpp − PyTorch| %.2g over %d×%d positions", tc.dir, worst, B, positions)
			if tc.window > 0 {
				t.Logf("%s: beyond the sliding window %.2g (llama.cpp attends to every position)", tc.dir, worstBeyond)
			}
			if !(worst <= tc.tol) {
				t.Errorf("max |llama.cpp − PyTorch| = %g, want ≤ %g", worst, tc.tol)
			}
		})
	}
}

// TestLlamaCppTokenizes: llama.cpp tokenizes text as braid does with the
// tokenizer metadata package gguf writes: braid's byte tokenizer, GPT-2's,
// and each tokenizer.json fixture on every text of its expect.json
// (Hugging Face tokenizers' ids), but for the texts in llamaCppDiffers.
//
// llamaCppDiffers are texts on which llama.cpp's tokenizers differ from
// Hugging Face's whatever the file says (the converter writes the same
// keys for these tokenizers): no GGUF key asks for Qwen2's NFC
// normalization; llama.cpp's SentencePiece-style tokenizer always puts ▁
// before the text, as SentencePiece does, where Mistral's Metaspace
// (prepend_scheme first) adds none before a text that starts with a space;
// and it splits text around a non-special added token and tokenizes both
// sides with the spaces Hugging Face drops.
var llamaCppDiffers = map[string][]string{
	"qwen2":   {"e\u0301 vs \u00e9"},
	"mistral": {" ", "  ", " Hello world", "   leading"},
	"llama2":  {"a <extra>b"},
}

func TestLlamaCppTokenizes(t *testing.T) {
	if *llamaCpp == "" {
		t.Skip("no -llamacpp")
	}
	text := "Fellow citizens of the Senate, 1790–2021: “café” naïve ½ 日本語 😀\n\n\tindent  two  spaces\r\nend"
	for _, tc := range []struct {
		name string
		tok  model.Tokenizer
	}{
		{"byte", model.ByteTokenizer{}},
		{"gpt2", model.GPT2Tokenizer{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := model.Config{Vocab: tc.tok.Vocab(), Context: 8, Dim: 32, Layers: 1, Heads: 2}
			path := filepath.Join(t.TempDir(), "m.gguf")
			if err := gguf.WriteFile(path, randomCheckpoint(t, c, tc.tok, 3), gguf.Options{Type: gguf.F16}); err != nil {
				t.Fatal(err)
			}
			checkTokens(t, path, text, tc.tok.Encode(nil, []byte(text)))
		})
	}
	for _, dir := range []string{"gpt2", "llama3", "qwen2", "llama2", "mistral"} {
		t.Run(dir, func(t *testing.T) {
			d := filepath.Join("..", "hftok", "testdata", dir)
			tok, err := hftok.Load(d)
			if err != nil {
				t.Fatal(err)
			}
			c := model.Config{Arch: model.ArchLlama, Vocab: tok.Vocab(), Context: 16, Dim: 8, Layers: 1, Heads: 2, KVHeads: 1, HeadDim: 4,
				Hidden: 16, NormEps: 1e-5, RopeTheta: 1e4}
			path := filepath.Join(t.TempDir(), "m.gguf")
			if err := gguf.WriteFile(path, randomCheckpoint(t, c, tok, 3), gguf.Options{Type: gguf.F16}); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(d, "expect.json"))
			if err != nil {
				t.Fatal(err)
			}
			var expect struct {
				Cases []struct {
					Text string
					IDs  []int32
				}
			}
			if err := json.Unmarshal(b, &expect); err != nil {
				t.Fatal(err)
			}
			agree := 0
			for _, cs := range expect.Cases {
				if cs.Text == "" || slices.Contains(llamaCppDiffers[dir], cs.Text) {
					continue
				}
				if checkTokens(t, path, cs.Text, cs.IDs) {
					agree++
				}
			}
			t.Logf("%s: llama.cpp agrees with Hugging Face on %d of %d texts (%d known to differ)", dir, agree, len(expect.Cases)-1, len(llamaCppDiffers[dir]))
		})
	}
}

// checkTokens reports whether llama.cpp tokenizes text into want, and
// says where not.
func checkTokens(t *testing.T, path, text string, want []int32) bool {
	t.Helper()
	f := filepath.Join(t.TempDir(), "text")
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	got := llamaCppRun(t, path, "tok", f)
	same := len(got) == len(want)
	for i := 0; same && i < len(got); i++ {
		same = int32(got[i]) == want[i]
	}
	if !same {
		t.Errorf("text %q: llama.cpp %v, braid %v", text, got, want)
	}
	return same
}

// TestLlamaCppGenerates: greedy generation from the bundled base in
// llama.cpp (F32 and Q8_0 files) against braid's on the same prompt.
func TestLlamaCppGenerates(t *testing.T) {
	if *llamaCpp == "" {
		t.Skip("no -llamacpp")
	}
	ck, err := model.LoadCheckpoint("../../models/base-en")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.NewInference(ck.Config, 1, ck.Config.Context)
	if err != nil {
		t.Fatal(err)
	}
	copy(m.Params, ck.Params)
	prompt := ck.Tokenizer.Encode(nil, []byte("Fellow citizens of the Senate and House of Representatives: "))
	const n = 64
	want, err := model.Generate(m, ck.Tokenizer, prompt, model.SampleOptions{MaxTokens: n})
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []gguf.Type{gguf.F32, gguf.Q8_0} {
		path := filepath.Join(t.TempDir(), "base.gguf")
		if err := gguf.WriteFile(path, ck, gguf.Options{Type: typ}); err != nil {
			t.Fatal(err)
		}
		got := llamaCppRun(t, path, "gen", strconv.Itoa(n), writeIDs(t, prompt))
		same := 0
		for same < min(len(got), len(want)) && int32(got[same]) == want[same] {
			same++
		}
		gotIDs := make([]int32, len(got))
		for i, g := range got {
			gotIDs[i] = int32(g)
		}
		t.Logf("%s: the first %d of %d greedy tokens agree\n  braid:     %q\n  llama.cpp: %q", typ, same, n,
			ck.Tokenizer.Decode(nil, want), ck.Tokenizer.Decode(nil, gotIDs))
		if typ == gguf.F32 && same < n {
			t.Errorf("f32: llama.cpp's greedy tokens leave braid's after %d", same)
		}
	}
}

// TestLlamaCppLoadsEveryType: llama.cpp loads the bundled base and a
// 64-channel Llama in every type and computes finite logits, which move
// from the F32 file's by what the rounding of the weights moves them.
func TestLlamaCppLoadsEveryType(t *testing.T) {
	if *llamaCpp == "" {
		t.Skip("no -llamacpp")
	}
	base, err := model.LoadCheckpoint("../../models/base-en")
	if err != nil {
		t.Fatal(err)
	}
	tiny, err := model.LoadCheckpoint("../testdata/llama_tiny")
	if err != nil {
		t.Fatal(err)
	}
	wide := tiny.Config
	wide.Dim, wide.Hidden = 64, 96
	for _, ck := range []*model.Checkpoint{base, randomCheckpoint(t, wide, tiny.Tokenizer, 4)} {
		ids := writeIDs(t, ck.Tokenizer.Encode(nil, []byte("We the People of the United States")))
		var ref []float64
		for _, typ := range allTypes {
			path := filepath.Join(t.TempDir(), "m.gguf")
			if err := gguf.WriteFile(path, ck, gguf.Options{Type: typ}); err != nil {
				t.Fatal(err)
			}
			got := llamaCppRun(t, path, "logits", ids)
			if typ == gguf.F32 {
				ref = got
			}
			worst := 0.0
			for i, g := range got {
				if math.IsNaN(g) || math.IsInf(g, 0) {
					t.Fatalf("%s %s: logit %d is %v", ck.Config.Arch, typ, i, g)
				}
				worst = max(worst, math.Abs(g-ref[i]))
			}
			t.Logf("%s %s: max |logit − f32 file's| %.3g", ck.Config.Arch, typ, worst)
		}
	}
}

// TestLlamaCppQ8MatchesLlamaQuantize: Q8_0 files as package gguf writes
// them against llama.cpp's own quantizer (llama-quantize's
// llama_model_quantize of the F32 file): the same type for every tensor,
// every value within one step of its block's scale of llama.cpp's (the
// two round the scale differently, quantizeQ8 says how), and logits about
// as far from the F32 file's as those of llama.cpp's file (within 1.5
// times as far, on a few positions; the figures are logged).
func TestLlamaCppQ8MatchesLlamaQuantize(t *testing.T) {
	if *llamaCpp == "" {
		t.Skip("no -llamacpp")
	}
	base, err := model.LoadCheckpoint("../../models/base-en")
	if err != nil {
		t.Fatal(err)
	}
	tiny, err := model.LoadCheckpoint("../testdata/llama_tiny")
	if err != nil {
		t.Fatal(err)
	}
	wide := tiny.Config
	wide.Dim, wide.Hidden = 64, 96
	for _, ck := range []*model.Checkpoint{base, randomCheckpoint(t, wide, tiny.Tokenizer, 5)} {
		dir := t.TempDir()
		f32, ours, theirs := filepath.Join(dir, "f32.gguf"), filepath.Join(dir, "ours.gguf"), filepath.Join(dir, "theirs.gguf")
		if err := gguf.WriteFile(f32, ck, gguf.Options{Type: gguf.F32}); err != nil {
			t.Fatal(err)
		}
		if err := gguf.WriteFile(ours, ck, gguf.Options{Type: gguf.Q8_0}); err != nil {
			t.Fatal(err)
		}
		llamaCppRun(t, f32, "quantize", theirs)
		a, b := parseFile(t, ours), parseFile(t, theirs)
		if len(a.TensorInfos) != len(b.TensorInfos) {
			t.Fatalf("%d tensors, llama.cpp's file %d", len(a.TensorInfos), len(b.TensorInfos))
		}
		differ := 0
		for _, ti := range a.TensorInfos {
			tb, ok := b.TensorInfos.Get(ti.Name)
			if !ok || tb.Type != ti.Type || !slices.Equal(tb.Dimensions, ti.Dimensions) {
				t.Errorf("%s: %v %v, llama.cpp's %v %v (present %v)", ti.Name, ti.Type, ti.Dimensions, tb.Type, tb.Dimensions, ok)
				continue
			}
			_, va, sa := a.tensor(t, ti.Name)
			_, vb, sb := b.tensor(t, ti.Name)
			for i := range va {
				if va[i] != vb[i] {
					differ++
				}
				if sa != nil && !(math.Abs(float64(va[i]-vb[i])) <= float64(max(sa[i], sb[i]))) {
					t.Fatalf("%s[%d]: %g, llama.cpp's %g (scales %g, %g)", ti.Name, i, va[i], vb[i], sa[i], sb[i])
				}
			}
		}
		ids := writeIDs(t, ck.Tokenizer.Encode(nil, []byte("We the People of the United States")))
		lf, lo, lt := llamaCppRun(t, f32, "logits", ids), llamaCppRun(t, ours, "logits", ids), llamaCppRun(t, theirs, "logits", ids)
		var dOurs, dTheirs, dBoth float64
		for i := range lf {
			dOurs, dTheirs, dBoth = max(dOurs, math.Abs(lo[i]-lf[i])), max(dTheirs, math.Abs(lt[i]-lf[i])), max(dBoth, math.Abs(lo[i]-lt[i]))
		}
		t.Logf("%s: %d dequantized values differ from llama.cpp's; max |logit − f32 file's|: ours %.3g, llama.cpp's %.3g; ours − llama.cpp's %.3g",
			ck.Config.Arch, differ, dOurs, dTheirs, dBoth)
		if !(dOurs <= 1.5*dTheirs) {
			t.Errorf("%s: our Q8_0 file moves the logits by %g, llama.cpp's by %g", ck.Config.Arch, dOurs, dTheirs)
		}
	}
}

// parseFile parses a GGUF file with the independent reader.
func parseFile(t *testing.T, path string) ggufFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseBytes(t, b)
}
