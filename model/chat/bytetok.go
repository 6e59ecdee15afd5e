package chat

// ByteTokenizer is model.ByteTokenizer with the control tokens of both
// built-in templates: ids 0..255 are bytes, 256 is end-of-text, and
// 257..262 are <|begin_of_text|>, <|start_header_id|>, <|end_header_id|>,
// <|eot_id|>, <|im_start|> and <|im_end|>. Text always encodes byte by
// byte, so "<|eot_id|>" in text is ten byte ids, never 260.
//
// It exists so that chat data can be prepared, trained on and tested with
// byte-level models, with no vocabulary file; real chat models bring
// their own tokenizer. It is stateless and safe for concurrent use.
type ByteTokenizer struct{}

// ByteTokenizerName is ByteTokenizer's Name.
const ByteTokenizerName = "byte-chat"

// byteControls are ByteTokenizer's control tokens, from id 257.
var byteControls = []string{llamaBegin, llamaStartHeader, llamaEndHeader, llamaEOT, chatmlStart, chatmlEnd}

const byteEOT = 256

// Name returns "byte-chat".
func (ByteTokenizer) Name() string { return ByteTokenizerName }

// Vocab returns 263.
func (ByteTokenizer) Vocab() int { return byteEOT + 1 + len(byteControls) }

// EOT returns 256.
func (ByteTokenizer) EOT() int32 { return byteEOT }

// Encode appends one id per byte.
func (ByteTokenizer) Encode(dst []int32, text []byte) []int32 {
	for _, b := range text {
		dst = append(dst, int32(b))
	}
	return dst
}

// Decode appends one byte per id below 256 and the string of each control
// token; end-of-text and unknown ids decode to nothing.
func (ByteTokenizer) Decode(dst []byte, ids []int32) []byte {
	for _, id := range ids {
		switch {
		case id >= 0 && id < 256:
			dst = append(dst, byte(id))
		case id > byteEOT && int(id-byteEOT-1) < len(byteControls):
			dst = append(dst, byteControls[id-byteEOT-1]...)
		}
	}
	return dst
}

// SpecialID returns the id of one of the six control tokens.
func (ByteTokenizer) SpecialID(s string) (int32, bool) {
	for i, c := range byteControls {
		if c == s {
			return int32(byteEOT + 1 + i), true
		}
	}
	return 0, false
}
