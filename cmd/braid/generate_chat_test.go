package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/model/chat"
)

// TestChatPrompt: generate --chat sends the prompt as one user message,
// rendered up to the assistant's header, and stops at the template's
// end-of-turn token.
func TestChatPrompt(t *testing.T) {
	tok := chat.ByteTokenizer{}
	for _, tc := range []struct {
		tmpl       chat.Template
		want, stop string
	}{
		{chat.Template{Name: chat.Llama3Name}, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"},
		{chat.Template{Name: chat.ChatMLName}, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>"},
	} {
		ids, stop, err := chatPrompt(tok, tc.tmpl, "Hi")
		if err != nil {
			t.Fatal(err)
		}
		if got := string(tok.Decode(nil, ids)); got != tc.want {
			t.Errorf("%s: prompt %q, want %q", tc.tmpl.Name, got, tc.want)
		}
		if got := string(tok.Decode(nil, []int32{stop})); got != tc.stop {
			t.Errorf("%s: stops at %q, want %q", tc.tmpl.Name, got, tc.stop)
		}
	}
}

// TestGenerateChatRefuses: --chat on a model whose tokenizer has no
// control tokens (the bundled byte-level model) says so; without a
// template it says how to give one.
func TestGenerateChatRefuses(t *testing.T) {
	base := filepath.Join("..", "..", "models", "base-en")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--chat"}, "--chat-template"},
		{[]string{"--chat", "--chat-template", "llama3"}, "tokenizer byte has no control tokens"},
		{[]string{"--chat-template", "llama3"}, "applies to --chat"},
	} {
		_, err := run(t, append([]string{"generate", "--model", base, "--prompt", "Hi", "--tokens", "2"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}
