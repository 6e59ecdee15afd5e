package hftok

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// A decodeStep is one decoder of Hugging Face's decoder chain, applied to
// one token: apply returns tok itself or new memory, never writing to tok;
// first reports whether tok is the first token of the chain (Metaspace
// treats it apart).
type decodeStep interface {
	apply(tok []byte, first bool) []byte
}

// decoder is a compiled decoder chain. Hugging Face applies each decoder
// to the list of token strings in turn, and some (Fuse, ByteLevel) join
// the list into one string; the steps before the first join act on each
// token alone and are applied once per id when the tokenizer is built
// (Tokenizer.text), the steps after it to the whole decoded text.
type decoder struct {
	perToken []decodeStep // up to and including the first join
	whole    []decodeStep // after it
	// positional: a per-token step treats the first token apart, so the
	// tokenizer keeps a second text of each id for when it comes first.
	positional bool
	// sep goes between tokens: a space when tokenizer.json has no decoder
	// (Hugging Face then joins the tokens with spaces), else nothing.
	sep []byte
}

// token applies the per-token steps to one token's string.
func (d *decoder) token(tok []byte, first bool) []byte {
	for _, s := range d.perToken {
		tok = s.apply(tok, first)
	}
	return tok
}

// finish applies the steps after the join to decoded text.
func (d *decoder) finish(text []byte) []byte {
	for _, s := range d.whole {
		text = s.apply(text, true)
	}
	return text
}

// byteLevelDec is the ByteLevel decoder: a token spelled in the byte-level
// alphabet becomes its bytes; one with a character outside it stays as it
// is. (It also joins the tokens.)
type byteLevelDec struct{}

func (byteLevelDec) apply(tok []byte, _ bool) []byte {
	if b, ok := fromByteLevel(string(tok)); ok {
		return b
	}
	return tok
}

// replaceDec is the Replace decoder.
type replaceDec struct {
	pattern *pattern
	content []byte
}

func (rd replaceDec) apply(tok []byte, _ bool) []byte { return rd.pattern.replace(tok, rd.content) }

// byteFallbackDec is the ByteFallback decoder: a token "<0xNN>" becomes
// the byte NN. Hugging Face then joins a run of such bytes into text, each
// byte of it U+FFFD if it is not UTF-8; here the bytes stay bytes.
type byteFallbackDec struct{}

func (byteFallbackDec) apply(tok []byte, _ bool) []byte {
	if b, ok := fallbackByte(tok); ok {
		return []byte{b}
	}
	return tok
}

// fallbackByte returns the byte of a "<0xNN>" token.
func fallbackByte(tok []byte) (byte, bool) {
	if len(tok) != 6 || !bytes.HasPrefix(tok, []byte("<0x")) || tok[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(string(tok[3:5]), 16, 8)
	return byte(v), err == nil
}

// fuseDec is the Fuse decoder; it only joins.
type fuseDec struct{}

func (fuseDec) apply(tok []byte, _ bool) []byte { return tok }

// stripDec is the Strip decoder: up to start copies of content at the
// beginning of a token and up to stop at its end are removed.
type stripDec struct {
	content     rune
	start, stop int
}

func (sd stripDec) apply(tok []byte, _ bool) []byte {
	lo, hi := 0, len(tok)
	for range sd.start {
		r, n := utf8.DecodeRune(tok[lo:hi])
		if n == 0 || r != sd.content {
			break
		}
		lo += n
	}
	for range sd.stop {
		r, n := utf8.DecodeLastRune(tok[lo:hi])
		if n == 0 || r != sd.content {
			break
		}
		hi -= n
	}
	return tok[lo:hi]
}

// metaspaceDec is the Metaspace decoder: the replacement character is a
// space again, but in the first token, where it is dropped unless
// prepend_scheme is "never".
type metaspaceDec struct {
	repl    []byte
	prepend int
}

func (md metaspaceDec) apply(tok []byte, first bool) []byte {
	if !bytes.Contains(tok, md.repl) {
		return tok
	}
	if first && md.prepend != prependNever {
		return bytes.ReplaceAll(tok, md.repl, nil)
	}
	return bytes.ReplaceAll(tok, md.repl, []byte(" "))
}
