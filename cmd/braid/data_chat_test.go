package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/model/chat"
	"github.com/braidml/braid/shard"
)

// Llama 3's chat_template as Meta-Llama-3-8B-Instruct's
// tokenizer_config.json has it.
const llama3ChatTemplate = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"

// chatInput writes n synthetic chat records (a question about a number and
// its answer) to dir/chat.jsonl, a tokenizer_config.json with chat_template
// to dir/model, and returns the records' answers.
func chatInput(t *testing.T, n int, chatTemplate string) (in, modelDir string, answers []string) {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	for i := range n {
		q, a := fmt.Sprintf("What is %d plus %d?", i, i%7), fmt.Sprintf("%d plus %d is %d.", i, i%7, i+i%7)
		msgs := []chat.Message{{Role: chat.User, Content: q}, {Role: chat.Assistant, Content: a}}
		if i%4 == 0 {
			msgs = append([]chat.Message{{Role: chat.System, Content: "Answer in words."}}, msgs...)
		}
		line, _ := json.Marshal(map[string]any{"messages": msgs})
		b.Write(append(line, '\n'))
		answers = append(answers, a)
	}
	in, modelDir = filepath.Join(dir, "chat.jsonl"), filepath.Join(dir, "model")
	os.Mkdir(modelDir, 0o755)
	cfg, _ := json.Marshal(map[string]string{"chat_template": chatTemplate, "bos_token": "<|begin_of_text|>"})
	if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(modelDir, chat.TokenizerConfigName), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return in, modelDir, answers
}

// TestDataPrepareChat: braid data prepare --format chat, with the template
// recognised from a model's tokenizer_config.json, writes a dataset with a
// loss mask that counts exactly the answers and their end-of-turn tokens,
// reports it, and verifies. The tokenizer is byte-chat: GPT-2's has no
// control tokens for a chat template (prepare refuses it, saying so).
func TestDataPrepareChat(t *testing.T) {
	in, modelDir, answers := chatInput(t, 120, llama3ChatTemplate)
	out := filepath.Join(t.TempDir(), "ds")
	log, err := run(t, "data", "prepare", "--input", in, "--out", out, "--format", "chat", "--tokenizer", "byte-chat",
		"--tokenizer-config", modelDir, "--seq-len", "128", "--holdout", "0.2")
	if err != nil {
		t.Fatalf("prepare: %v\n%s", err, log)
	}
	t.Log(log)
	for _, want := range []string{"120 documents", "chat template llama3: the loss counts on", "tokenizer byte-chat"} {
		if !strings.Contains(log, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	m, err := shard.ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	if !m.LossMask || m.FormatVersion != 2 || m.Source.Format != shard.FormatChat || m.Source.ChatTemplate != "llama3" {
		t.Errorf("manifest: loss mask %v, version %d, source %+v", m.LossMask, m.FormatVersion, m.Source)
	}
	var trained int64
	for _, a := range answers {
		trained += int64(len(a)) + 1 // the bytes, and <|eot_id|>
	}
	if m.Source.Trained != trained {
		t.Errorf("%d trained tokens, want %d: the answers and an end-of-turn token each", m.Source.Trained, trained)
	}

	// The first train sequence's trained targets are (pieces of) answers.
	d, err := shard.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	seq, _ := d.Sequence(shard.Train, 0, nil)
	mask, _ := d.SequenceMask(shard.Train, 0, nil)
	var learnt []int32
	for j := 1; j < len(seq); j++ {
		if mask[j] {
			learnt = append(learnt, seq[j])
		}
	}
	text := string(chat.ByteTokenizer{}.Decode(nil, learnt))
	if !strings.Contains(text, " plus ") || !strings.Contains(text, ".<|eot_id|>") || strings.Contains(text, "What") || strings.Contains(text, "assistant") {
		t.Errorf("the trained targets of sequence 0 read %q: want answers only, each closed by <|eot_id|>", text)
	}

	log, err = run(t, "data", "verify", out)
	if err != nil || !strings.Contains(log, "with loss masks") {
		t.Errorf("verify: %v\n%s", err, log)
	}
}

// TestDataPrepareChatChoices: the template can be named instead of
// recognised; an unknown template, a tokenizer without control tokens, or
// no template at all are refused with what to do; prompt-completion
// records prepare too.
func TestDataPrepareChatChoices(t *testing.T) {
	in, modelDir, _ := chatInput(t, 60, "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}")
	base := t.TempDir()
	args := func(name string, more ...string) []string {
		return append([]string{"data", "prepare", "--input", in, "--out", filepath.Join(base, name), "--format", "chat", "--seq-len", "64"}, more...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error; "" for success
	}{
		{"unknown", args("unknown", "--tokenizer", "byte-chat", "--tokenizer-config", modelDir), "chat template not recognised (supported: llama3, chatml)"},
		{"named", args("named", "--tokenizer", "byte-chat", "--tokenizer-config", modelDir, "--chat-template", "chatml"), ""},
		{"bad name", args("badname", "--tokenizer", "byte-chat", "--chat-template", "vicuna"), `"vicuna"`},
		{"gpt2", args("gpt2", "--tokenizer", "gpt2", "--chat-template", "llama3"), "tokenizer gpt2 has no control tokens"},
		{"none", args("none", "--tokenizer", "byte-chat"), "--tokenizer-config"},
		{"text", []string{"data", "prepare", "--input", in, "--out", filepath.Join(base, "text"), "--chat-template", "llama3"}, "--format chat"},
	} {
		log, err := run(t, tc.args...)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v\n%s", tc.name, err, log)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	if m, err := shard.ReadManifest(filepath.Join(base, "named")); err != nil || m.Source.ChatTemplate != "chatml" {
		t.Errorf("--chat-template chatml: %v %v", m, err)
	}

	pc := filepath.Join(t.TempDir(), "pc.jsonl")
	var b strings.Builder
	for i := range 60 {
		fmt.Fprintf(&b, `{"prompt": "Count to %d.", "completion": "%s"}`+"\n", i%9+1, strings.Repeat("one ", i%9+1))
	}
	os.WriteFile(pc, []byte(b.String()), 0o644)
	log, err := run(t, "data", "prepare", "--input", pc, "--out", filepath.Join(base, "pc"), "--format", "prompt-completion",
		"--tokenizer", "byte-chat", "--chat-template", "chatml", "--seq-len", "64")
	if err != nil || !strings.Contains(log, "chat template chatml") {
		t.Errorf("prompt-completion: %v\n%s", err, log)
	}
}
