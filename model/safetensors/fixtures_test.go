package safetensors

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The PyTorch fixtures written by scripts/gen_reference.py must decode, and
// the script writes the same canonical layout as Encode.
func TestFixturesDecode(t *testing.T) {
	tests := []struct {
		path   string
		shapes map[string][]int
		dtypes map[string]Dtype
	}{
		{
			path: "../../kernels/testdata/reference.safetensors",
			shapes: map[string][]int{
				"linear.weight":        {20, 12},
				"layernorm.rstd":       {2, 5},
				"attention.qkv":        {2, 6, 48},
				"attention.att":        {2, 4, 6, 6},
				"crossentropy.targets": {2, 5},
				"crossentropy.loss":    {1},
				"encoder.dwpe":         {8, 12},
				"adamw.params":         {3, 50},
				"clip.grad_after":      {50},
			},
			dtypes: map[string]Dtype{"crossentropy.targets": I32, "encoder.tokens": I32, "gelu.dinp": F32},
		},
		{
			path: "../testdata/gpt2_tiny.safetensors",
			shapes: map[string][]int{
				"tokens":                       {2, 12},
				"logits":                       {2, 12, 64},
				"loss":                         {1},
				"param.wte":                    {64, 32},
				"param.h.1.attn.c_attn.weight": {96, 32},
				"grad.h.0.mlp.c_proj.weight":   {32, 128},
				"final.ln_f.bias":              {32},
				"adamw_losses":                 {10},
				"adamw_norms":                  {10},
			},
			dtypes: map[string]Dtype{"tokens": I32, "targets": I32, "param.wpe": F32},
		},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.path), func(t *testing.T) {
			f, err := ReadFile(tt.path)
			if err != nil {
				t.Fatalf("%v (regenerate with /usr/bin/python3 scripts/gen_reference.py)", err)
			}
			t.Logf("%d tensors, metadata %d keys", len(f.Tensors), len(f.Metadata))
			for name, want := range tt.shapes {
				x, ok := f.Tensor(name)
				if !ok {
					t.Errorf("tensor %q missing", name)
					continue
				}
				if !slices.Equal(x.Shape, want) {
					t.Errorf("%s: shape %v, want %v", name, x.Shape, want)
				}
			}
			for name, want := range tt.dtypes {
				if x, ok := f.Tensor(name); !ok || x.Dtype != want {
					t.Errorf("%s: dtype %v (found %v), want %s", name, x, ok, want)
				}
			}
			if f.Metadata["generator"] != "scripts/gen_reference.py" {
				t.Errorf("metadata generator = %q", f.Metadata["generator"])
			}
			raw, _ := os.ReadFile(tt.path)
			var buf bytes.Buffer
			if err := Encode(&buf, f.Tensors, f.Metadata); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), raw) {
				t.Error("re-encoding the fixture does not reproduce its bytes: the script and Encode disagree on the canonical layout")
			}
		})
	}

	// Spot checks tying fixtures to the script's contract.
	f, err := ReadFile("../testdata/gpt2_tiny.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	loss, _ := f.Tensor("loss")
	losses, _ := f.Tensor("adamw_losses")
	l0, _ := loss.Float32s()
	ls, _ := losses.Float32s()
	if l0[0] != ls[0] || !(ls[9] < ls[0]) {
		t.Errorf("loss %v, adamw_losses %v: want losses[0] == loss and training to reduce it", l0, ls)
	}
	tok, _ := f.Tensor("tokens")
	ids, err := tok.Int32s()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if id < 0 || id >= 64 {
			t.Fatalf("token %d outside [0, 64)", id)
		}
	}
}
