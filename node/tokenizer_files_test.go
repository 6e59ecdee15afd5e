package node_test

import (
	"slices"
	"testing"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
)

// The coordinator admits as a base's tokenizer files exactly the files
// package model reads a tokenizer from, which it cannot import.
func TestTokenizerFilesAgree(t *testing.T) {
	if c, m := coordinator.TokenizerFiles(), model.TokenizerFiles(); !slices.Equal(c, m) {
		t.Fatalf("coordinator admits %v, model reads %v", c, m)
	}
	for _, name := range model.TokenizerFiles() {
		if !coordinator.ValidTokenizerFile(name) || model.MaxTokenizerFileBytes(name) <= 0 {
			t.Errorf("%s: admitted %v, at most %d bytes", name, coordinator.ValidTokenizerFile(name), model.MaxTokenizerFileBytes(name))
		}
	}
	for _, name := range []string{"", "vocab.json", "merges.txt", "special_tokens_map.json", "../tokenizer.json", "tokenizer.json/"} {
		if coordinator.ValidTokenizerFile(name) {
			t.Errorf("%q admitted", name)
		}
	}
}
