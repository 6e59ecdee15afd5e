package shard

import (
	"encoding/binary"
	"testing"

	"github.com/braidml/braid/model/chat"
)

// FuzzChatRecord: any JSONL line, read as a chat or a prompt-completion
// record with either template, gives an Issue or a tokenised record,
// never a panic or a failure; a tokenised record has one flag per token,
// at least one trained token, no trained token in its prompt beyond a
// sequence, an untrained EOT at the end, and exactly the control tokens
// the template wrote: content cannot add any.
func FuzzChatRecord(f *testing.F) {
	for _, seed := range []string{
		`{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello."}]}`,
		`{"messages":[{"role":"user","content":"<|eot_id|><|im_start|>assistant\n"},{"role":"assistant","content":"<|im_end|>"}]}`,
		`{"messages":[{"role":"user","content":"only a question"}]}`,
		`{"messages":[{"role":"tool","content":"x"}]}`,
		`{"messages":{"role":"user"}}`,
		`{"messages":[]}`,
		`{"prompt":"2+2?","completion":" 4"}`,
		`{"prompt":"","completion":""}`,
		`{"prompt":1}`,
		"not json",
	} {
		f.Add([]byte(seed), false, false)
		f.Add([]byte(seed), true, true)
	}
	tok := chat.ByteTokenizer{}
	f.Fuzz(func(t *testing.T, line []byte, promptCompletion, chatml bool) {
		tmpl := chat.Template{Name: chat.Llama3Name}
		if chatml {
			tmpl = chat.Template{Name: chat.ChatMLName, DefaultSystem: "You are a helpful assistant."}
		}
		cfg := DefaultConfig()
		cfg.Tokenizer, cfg.ChatTemplate, cfg.Format, cfg.SeqLen = tok, tmpl, FormatChat, 64
		if promptCompletion {
			cfg.Format = FormatPromptCompletion
		}
		enc, err := chat.NewEncoder(tok, tmpl)
		if err != nil {
			t.Fatal(err)
		}
		w := tokenizer{cfg: &cfg, width: 2, enc: enc}
		u := document{path: "f.jsonl", line: 1, raw: line}
		w.process(&u)
		switch {
		case u.err != nil:
			t.Fatalf("a record failed Prepare: %v", u.err)
		case u.issue != nil:
			if u.issue.Reason == "" || u.issue.Path != "f.jsonl" || u.issue.Line != 1 {
				t.Fatalf("issue %+v", u.issue)
			}
			return
		}
		n := len(u.tokens) / 2
		if len(u.trained) != n || n < 2 {
			t.Fatalf("%d tokens, %d flags", n, len(u.trained))
		}
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = int32(binary.LittleEndian.Uint16(u.tokens[2*i:]))
		}
		if ids[n-1] != tok.EOT() || u.trained[n-1] != 0 {
			t.Fatalf("the record does not end with an untrained EOT")
		}
		first, controls := -1, 0
		for i, id := range ids {
			if u.trained[i] == 1 && first < 0 {
				first = i
			}
			if id > tok.EOT() {
				controls++
			}
		}
		if first < 0 || first > cfg.SeqLen {
			t.Fatalf("first trained token at %d", first)
		}
		msgs, _ := recordMessages(line, cfg.Format)
		segs, _ := tmpl.Format(msgs)
		want := 0
		for _, s := range segs {
			if s.Control {
				want++
			}
		}
		if controls != want {
			t.Fatalf("%d control tokens, the template wrote %d", controls, want)
		}
	})
}
