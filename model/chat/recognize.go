package chat

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/braidml/braid/internal/safefile"
)

// TokenizerConfigName is the Hugging Face file that holds a model's
// chat_template.
const TokenizerConfigName = "tokenizer_config.json"

// maxTokenizerConfigBytes bounds the tokenizer_config.json read (real ones
// are under 100 kB; those that list every added token reach a few MB).
const maxTokenizerConfigBytes = 64 << 20

// Recognize returns the built-in template that a Hugging Face chat_template
// (Jinja source) implements, recognised by its control tokens:
//
//   - <|start_header_id|>, <|end_header_id|> and <|eot_id|>: llama3 (Llama
//     3, 3.1, 3.2, 3.3; the default system header of 3.1 and later is not
//     reproduced);
//   - <|im_start|> and <|im_end|>: chatml, with the default system message
//     of Qwen's templates when the source holds one as a literal
//     ('<|im_start|>system\n...<|im_end|>\n'). A reasoning template (one
//     that writes <think>, as Qwen3's) is not recognised.
//
// Anything else is ErrUnknownTemplate, quoting the start of the source.
func Recognize(source string) (Template, error) {
	has := func(ss ...string) bool {
		for _, s := range ss {
			if !strings.Contains(source, s) {
				return false
			}
		}
		return true
	}
	switch {
	case has(llamaStartHeader, llamaEndHeader, llamaEOT):
		return Template{Name: Llama3Name}, nil
	case has(chatmlStart, chatmlEnd) && !has("<think>"):
		t := Template{Name: ChatMLName}
		if m := qwenDefaultSystem.FindStringSubmatch(source); m != nil {
			t.DefaultSystem = jinjaUnescape(m[1])
		}
		return t, nil
	case has(chatmlStart, chatmlEnd):
		return Template{}, fmt.Errorf("%w: a ChatML template with reasoning (<think>) sections; --chat-template chatml renders plain ChatML", ErrUnknownTemplate)
	}
	return Template{}, fmt.Errorf("%w: %q", ErrUnknownTemplate, excerpt(source, 80))
}

// qwenDefaultSystem finds the default system turn of Qwen's templates: one
// Jinja string literal '<|im_start|>system\n...<|im_end|>\n' (the newlines
// escaped or not).
var qwenDefaultSystem = regexp.MustCompile(`'<\|im_start\|>system(?:\\n|\n)([^'\\]*(?:\\.[^'\\]*)*)<\|im_end\|>(?:\\n|\n)'`)

// jinjaUnescape decodes the escapes of a Jinja (Python) string literal
// that templates use: \n, \t, \\, \' and \".
func jinjaUnescape(s string) string {
	return strings.NewReplacer(`\n`, "\n", `\t`, "\t", `\\`, `\`, `\'`, "'", `\"`, `"`).Replace(s)
}

func excerpt(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func isRuneStart(b byte) bool { return b&0xc0 != 0x80 }

// FromTokenizerConfig reads the chat_template of a Hugging Face
// tokenizer_config.json (path is the file, or a directory holding it) and
// recognises it (Recognize). A chat_template given as a list of named
// templates uses the one named "default". The file is read once, at most
// 64 MiB, and must be a regular file.
func FromTokenizerConfig(path string) (Template, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, TokenizerConfigName)
	}
	b, err := safefile.ReadFile(path, maxTokenizerConfigBytes)
	if err != nil {
		return Template{}, fmt.Errorf("chat: %w", err)
	}
	var cfg struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return Template{}, fmt.Errorf("chat: %s: not a JSON object: %v", path, err)
	}
	var source string
	var named []struct{ Name, Template string }
	switch {
	case len(cfg.ChatTemplate) == 0 || string(cfg.ChatTemplate) == "null":
		return Template{}, fmt.Errorf("%w: %s has no chat_template (a base model?); give the template by name", ErrUnknownTemplate, path)
	case json.Unmarshal(cfg.ChatTemplate, &source) == nil:
	case json.Unmarshal(cfg.ChatTemplate, &named) == nil:
		for _, n := range named {
			if n.Name == "default" {
				source = n.Template
			}
		}
		if source == "" {
			return Template{}, fmt.Errorf("%w: %s: chat_template lists no template named \"default\"", ErrUnknownTemplate, path)
		}
	default:
		return Template{}, fmt.Errorf("chat: %s: chat_template is neither a string nor a list of named templates", path)
	}
	t, err := Recognize(source)
	if err != nil {
		return Template{}, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}
