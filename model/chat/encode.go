package chat

import (
	"fmt"

	"github.com/braidml/braid/model"
)

// SpecialTokenizer is the capability a tokenizer needs for chat templates,
// beyond model.Tokenizer: encoding a control token by its string.
//
// SpecialID returns the id of the control token s (such as "<|eot_id|>"),
// and false when the vocabulary has no such token. The tokenizer's Encode
// must never return a control token's id: text that spells "<|eot_id|>" is
// ordinary text (tiktoken's encode_ordinary; Hugging Face tokenizers with
// split_special_tokens). SpecialID must be safe for concurrent use.
type SpecialTokenizer interface {
	SpecialID(s string) (id int32, ok bool)
}

// Encoder tokenises a template's segments with a tokenizer: text with the
// tokenizer's Encode, control tokens with its SpecialID. It is read-only
// once made and safe for concurrent use (if the tokenizer is).
type Encoder struct {
	tok      model.Tokenizer
	template Template
	control  map[string]int32 // the template's control tokens
	// reserved are the ids text must never encode to: the template's
	// control tokens and the tokenizer's end-of-text.
	reserved map[int32]bool
}

// NewEncoder checks that tok can encode every control token of t as one id
// in its vocabulary (ErrNoControlTokens names the first it cannot) and
// returns an encoder for them.
func NewEncoder(tok model.Tokenizer, t Template) (*Encoder, error) {
	if _, err := t.render(nil, false); err != nil {
		return nil, err
	}
	st, ok := tok.(SpecialTokenizer)
	if !ok {
		return nil, fmt.Errorf("%w: tokenizer %s has no control tokens (the %s template needs %v)", ErrNoControlTokens, tok.Name(), t.Name, t.Controls())
	}
	e := &Encoder{tok: tok, template: t, control: map[string]int32{}, reserved: map[int32]bool{tok.EOT(): true}}
	for _, s := range t.Controls() {
		id, ok := st.SpecialID(s)
		if !ok || id < 0 || int(id) >= tok.Vocab() {
			return nil, fmt.Errorf("%w: tokenizer %s has no control token %s (the %s template needs %v)", ErrNoControlTokens, tok.Name(), s, t.Name, t.Controls())
		}
		e.control[s], e.reserved[id] = id, true
	}
	return e, nil
}

// Template is the encoder's template.
func (e *Encoder) Template() Template { return e.template }

// EndOfTurn is the id of the template's end-of-turn token.
func (e *Encoder) EndOfTurn() int32 { return e.control[e.template.EndOfTurn()] }

// Encode appends the ids of segs to ids, and to trained whether the loss
// counts on each (its segment's Trained), and returns both. Each text
// segment is encoded on its own. It fails if a segment names a control
// token that is not the template's, or if the tokenizer encodes text to a
// control token or end-of-text (ErrControlInText): record content must not
// be able to forge a turn.
func (e *Encoder) Encode(ids []int32, trained []bool, segs []Segment) ([]int32, []bool, error) {
	for _, s := range segs {
		start := len(ids)
		if s.Control {
			id, ok := e.control[s.Text]
			if !ok {
				return ids, trained, fmt.Errorf("%w: %s is not a control token of the %s template", ErrNoControlTokens, s.Text, e.template.Name)
			}
			ids = append(ids, id)
		} else {
			ids = e.tok.Encode(ids, []byte(s.Text))
			for _, id := range ids[start:] {
				if e.reserved[id] {
					return ids, trained, fmt.Errorf("%w: tokenizer %s encoded text to id %d, a control token (its Encode must treat special-token strings as text)", ErrControlInText, e.tok.Name(), id)
				}
			}
		}
		for range len(ids) - start {
			trained = append(trained, s.Trained)
		}
	}
	return ids, trained, nil
}
