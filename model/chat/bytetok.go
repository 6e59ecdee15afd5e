package chat

import "github.com/braidml/braid/model"

// ByteTokenizer is model.ByteTokenizer with the control tokens of both
// built-in templates: ids 0..255 are bytes, 256 is end-of-text, and
// 257..262 are <|begin_of_text|>, <|start_header_id|>, <|end_header_id|>,
// <|eot_id|>, <|im_start|> and <|im_end|>. Text always encodes byte by
// byte (model.ByteTokenizer's Encode), so "<|eot_id|>" in text is ten byte
// ids, never 260.
//
// It exists so that chat data can be prepared, trained on and tested with
// byte-level models, with no vocabulary file; real chat models bring
// their own tokenizer. It is stateless and safe for concurrent use.
type ByteTokenizer struct{ model.ByteTokenizer }

// ByteTokenizerName is ByteTokenizer's Name.
const ByteTokenizerName = "byte-chat"

// byteControls are ByteTokenizer's control tokens, from id 257.
var byteControls = []string{llamaBegin, llamaStartHeader, llamaEndHeader, llamaEOT, chatmlStart, chatmlEnd}

// Name returns "byte-chat".
func (ByteTokenizer) Name() string { return ByteTokenizerName }

// Vocab returns 263.
func (ByteTokenizer) Vocab() int { return model.ByteEOT + 1 + len(byteControls) }

// Decode appends one byte per id below 256 and the string of each control
// token; end-of-text and unknown ids decode to nothing.
func (t ByteTokenizer) Decode(dst []byte, ids []int32) []byte {
	for _, id := range ids {
		if c := int(id) - model.ByteEOT - 1; c >= 0 && c < len(byteControls) {
			dst = append(dst, byteControls[c]...)
		} else {
			dst = t.ByteTokenizer.Decode(dst, []int32{id})
		}
	}
	return dst
}

// SpecialID returns the id of one of the six control tokens.
func (ByteTokenizer) SpecialID(s string) (int32, bool) {
	for i, c := range byteControls {
		if c == s {
			return int32(model.ByteEOT + 1 + i), true
		}
	}
	return 0, false
}
