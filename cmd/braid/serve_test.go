package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestServeRefuses: braid serve refuses, before it listens, a device other
// than the CPU (by name), a chat template the model's tokenizer cannot
// encode, and an unreadable token file.
func TestServeRefuses(t *testing.T) {
	base := filepath.Join("..", "..", "models", "base-en")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--device", "cuda"}, "--device cuda: braid serve computes on the CPU only"},
		{[]string{"--chat-template", "llama3"}, "tokenizer byte has no control tokens"},
		{[]string{"--chat-template", "jinja"}, "--chat-template"},
		{[]string{"--token-file", filepath.Join(t.TempDir(), "missing")}, "--token-file"},
	} {
		_, err := run(t, append([]string{"serve", "--model", base, "--addr", "127.0.0.1:0"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}
