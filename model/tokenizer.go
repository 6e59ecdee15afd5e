package model

import "fmt"

// A Tokenizer turns text into token ids and back.
type Tokenizer interface {
	// Name identifies the tokenizer in checkpoints ("byte", later "gpt2").
	Name() string
	// Vocab is the number of distinct ids, EOT included.
	Vocab() int
	// EOT is the end-of-text id that separates documents.
	EOT() int32
	// Encode appends the ids of text to dst and returns it.
	Encode(dst []int32, text []byte) []int32
	// Decode appends the bytes of ids to dst and returns it; EOT decodes to
	// nothing.
	Decode(dst []byte, ids []int32) []byte
}

// ByteTokenizer is the byte-level tokenizer: ids 0..255 are bytes, 256 is
// end-of-text. It needs no vocabulary file and handles any input.
type ByteTokenizer struct{}

// ByteEOT is ByteTokenizer's end-of-text id.
const ByteEOT = 256

// Name returns "byte".
func (ByteTokenizer) Name() string { return "byte" }

// Vocab returns 257.
func (ByteTokenizer) Vocab() int { return 257 }

// EOT returns 256.
func (ByteTokenizer) EOT() int32 { return ByteEOT }

// Encode appends one id per byte.
func (ByteTokenizer) Encode(dst []int32, text []byte) []int32 {
	for _, b := range text {
		dst = append(dst, int32(b))
	}
	return dst
}

// Decode appends one byte per id below 256 and skips the rest.
func (ByteTokenizer) Decode(dst []byte, ids []int32) []byte {
	for _, id := range ids {
		if id >= 0 && id < 256 {
			dst = append(dst, byte(id))
		}
	}
	return dst
}

// TokenizerByName returns the tokenizer a checkpoint names.
func TokenizerByName(name string) (Tokenizer, error) {
	switch name {
	case "byte", "":
		return ByteTokenizer{}, nil
	}
	return nil, fmt.Errorf("model: unknown tokenizer %q (this build knows: byte)", name)
}
