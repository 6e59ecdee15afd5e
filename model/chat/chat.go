// Package chat renders conversations in a model's chat template and
// tokenises them with a loss mask: which tokens a fine-tuning step learns
// (each assistant answer and the end-of-turn token that closes it) and
// which it only reads (system and user turns, the template's headers).
//
// Two templates are built in: Llama 3's and ChatML as Qwen uses it.
// Recognize picks one from the chat_template string of a model's
// tokenizer_config.json by its control tokens; ByName picks one by name.
// Templates are not executed (there is no Jinja here): each is written in
// Go, and the tests compare its output with the Hugging Face templates
// rendered by Jinja.
//
// Control tokens (<|eot_id|>, <|im_start|>, ...) come only from the
// template, encoded as single ids through the tokenizer's SpecialID;
// message content is always encoded as ordinary text, so a record that
// spells a control token's string cannot forge a turn (Encoder checks it).
//
// What it does not do: tool calls and tool roles, per-message weights,
// reasoning (<think>) templates, the default system header of Llama 3.1
// and later ("Cutting Knowledge Date: ..."), or any other template.
package chat

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Errors.
var (
	// ErrUnknownTemplate: a chat_template that is neither Llama 3's nor
	// ChatML, or a template name that is not llama3 or chatml.
	ErrUnknownTemplate = errors.New("chat: chat template not recognised (supported: llama3, chatml)")
	// ErrRole: a message whose role is not system, user or assistant.
	ErrRole = errors.New("chat: unknown role")
	// ErrNoAnswer: a conversation to train on without an assistant message.
	ErrNoAnswer = errors.New("chat: no assistant message")
	// ErrNoControlTokens: the tokenizer cannot encode the template's
	// control tokens (it has no SpecialID, or lacks one of them).
	ErrNoControlTokens = errors.New("chat: the tokenizer lacks the template's control tokens")
	// ErrControlInText: the tokenizer encoded ordinary text to a control
	// token (a tokenizer that parses special tokens in text).
	ErrControlInText = errors.New("chat: text encoded to a control token")
)

// Role is who speaks a message.
type Role string

// The roles.
const (
	System    Role = "system"
	User      Role = "user"
	Assistant Role = "assistant"
)

// Message is one turn of a conversation, as in the "messages" of
// OpenAI-style chat data.
type Message struct {
	Role    Role   `json:"role"`
	Content string `json:"content"`
}

// Segment is a piece of a rendered conversation: ordinary text, or one
// control token named by its string. Trained says whether the loss counts
// on its tokens.
type Segment struct {
	Text    string
	Control bool // Text is a control token's string: it encodes to one id
	Trained bool
}

// The template names.
const (
	Llama3Name = "llama3"
	ChatMLName = "chatml"
)

// Template is a chat template. The zero value is not a template: use
// ByName, Recognize or FromTokenizerConfig.
type Template struct {
	// Name is Llama3Name or ChatMLName.
	Name string
	// DefaultSystem is the system message that a conversation without one
	// starts with, "" for none. Qwen's ChatML templates have one ("You are
	// a helpful assistant."); Recognize takes it from the template.
	DefaultSystem string
}

// Control tokens of the templates.
const (
	llamaBegin       = "<|begin_of_text|>"
	llamaStartHeader = "<|start_header_id|>"
	llamaEndHeader   = "<|end_header_id|>"
	llamaEOT         = "<|eot_id|>"
	chatmlStart      = "<|im_start|>"
	chatmlEnd        = "<|im_end|>"
)

// ByName returns the template called name (llama3 or chatml), without a
// default system message.
func ByName(name string) (Template, error) {
	switch name {
	case Llama3Name, ChatMLName:
		return Template{Name: name}, nil
	}
	return Template{}, fmt.Errorf("%w: no template called %q", ErrUnknownTemplate, name)
}

// Controls lists the control tokens the template uses.
func (t Template) Controls() []string {
	if t.Name == Llama3Name {
		return []string{llamaBegin, llamaStartHeader, llamaEndHeader, llamaEOT}
	}
	return []string{chatmlStart, chatmlEnd}
}

// EndOfTurn is the control token that closes every turn: where a reply
// generated after Prompt ends.
func (t Template) EndOfTurn() string {
	if t.Name == Llama3Name {
		return llamaEOT
	}
	return chatmlEnd
}

// Format renders a conversation to train on: every message, the tokens of
// each assistant message's content and of the end-of-turn token after it
// marked Trained. It fails on an unknown role (ErrRole) and on a
// conversation without an assistant message (ErrNoAnswer). Adjacent text
// of the same Trained flag is one segment: it is tokenised as one piece,
// as Hugging Face tokenises the rendered string.
func (t Template) Format(msgs []Message) ([]Segment, error) {
	answered := false
	for _, m := range msgs {
		answered = answered || m.Role == Assistant
	}
	if !answered {
		return nil, ErrNoAnswer
	}
	return t.render(msgs, false)
}

// Prompt renders a conversation for generation: every message (none
// trained), then the header of the assistant's turn, so that the model's
// continuation is the reply; it ends at EndOfTurn.
func (t Template) Prompt(msgs []Message) ([]Segment, error) {
	return t.render(msgs, true)
}

// Text is the rendered string of segs: what the Hugging Face template
// renders, control tokens written out.
func Text(segs []Segment) string {
	var b strings.Builder
	for _, s := range segs {
		b.WriteString(s.Text)
	}
	return b.String()
}

func (t Template) render(msgs []Message, generation bool) ([]Segment, error) {
	for i, m := range msgs {
		if m.Role != System && m.Role != User && m.Role != Assistant {
			return nil, fmt.Errorf("%w: message %d has role %q (supported: system, user, assistant)", ErrRole, i, m.Role)
		}
	}
	var r renderer
	switch t.Name {
	case Llama3Name:
		// {{ bos_token }}, then per message '<|start_header_id|>' + role +
		// '<|end_header_id|>\n\n' + content|trim + '<|eot_id|>'.
		r.control(llamaBegin, false)
		for _, m := range msgs {
			trained := m.Role == Assistant
			r.llamaHeader(m.Role)
			r.text(pyStrip(m.Content), trained)
			r.control(llamaEOT, trained)
		}
		if generation {
			r.llamaHeader(Assistant)
		}
	case ChatMLName:
		// '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n',
		// after Qwen's default system message if the first is not one.
		if t.DefaultSystem != "" && (len(msgs) == 0 || msgs[0].Role != System) {
			r.chatmlTurn(Message{Role: System, Content: t.DefaultSystem})
		}
		for _, m := range msgs {
			r.chatmlTurn(m)
		}
		if generation {
			r.control(chatmlStart, false)
			r.text(string(Assistant)+"\n", false)
		}
	default:
		return nil, fmt.Errorf("%w: template %q", ErrUnknownTemplate, t.Name)
	}
	return r.segs, nil
}

// renderer appends segments, merging adjacent text of the same flag.
type renderer struct{ segs []Segment }

func (r *renderer) control(s string, trained bool) {
	r.segs = append(r.segs, Segment{Text: s, Control: true, Trained: trained})
}

func (r *renderer) text(s string, trained bool) {
	if s == "" {
		return
	}
	if n := len(r.segs); n > 0 && !r.segs[n-1].Control && r.segs[n-1].Trained == trained {
		r.segs[n-1].Text += s
		return
	}
	r.segs = append(r.segs, Segment{Text: s, Trained: trained})
}

func (r *renderer) llamaHeader(role Role) {
	r.control(llamaStartHeader, false)
	r.text(string(role), false)
	r.control(llamaEndHeader, false)
	r.text("\n\n", false)
}

func (r *renderer) chatmlTurn(m Message) {
	trained := m.Role == Assistant
	r.control(chatmlStart, false)
	r.text(string(m.Role)+"\n", false)
	r.text(m.Content, trained)
	r.control(chatmlEnd, trained)
	r.text("\n", false)
}

// pyStrip is Jinja's trim filter, Python's str.strip(): it removes leading
// and trailing white space, which for Python also includes the separators
// U+001C..U+001F.
func pyStrip(s string) string {
	return strings.TrimFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f })
}
