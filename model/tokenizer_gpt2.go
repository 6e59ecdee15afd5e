package model

import (
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/braidml/braid/model/internal/pretok"
	"github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// GPT-2's vocabulary: OpenAI's r50k_base encoding.
const (
	// GPT2EOT is GPT2Tokenizer's end-of-text id, the special token
	// "<|endoftext|>".
	GPT2EOT = 50256
	// GPT2Vocab is the number of GPT-2 ids: 50256 BPE tokens and EOT.
	GPT2Vocab = 50257

	// gpt2File names the vocabulary inside tiktoken-go-loader's embedded
	// assets (the loader looks up the base name only; nothing is fetched).
	gpt2File = "r50k_base.tiktoken"
	// gpt2Pattern is r50k_base's pre-tokenizer, as in OpenAI's
	// tiktoken_ext/openai_public.py and tiktoken-go's encoding.go.
	gpt2Pattern = pretok.GPT2Pattern
)

// GPT2Tokenizer is GPT-2's byte-level BPE tokenizer (OpenAI's r50k_base
// encoding): 50256 BPE tokens and the end-of-text id 50256.
//
// The vocabulary is embedded in the binary by the Go module
// github.com/pkoukk/tiktoken-go-loader and read once, on first use;
// nothing touches the network or the file system. The BPE itself is
// github.com/pkoukk/tiktoken-go's.
//
// The zero value is ready to use, and all GPT2Tokenizer values share one
// read-only vocabulary: Encode and Decode are safe for concurrent use.
type GPT2Tokenizer struct{}

// Name returns "gpt2".
func (GPT2Tokenizer) Name() string { return "gpt2" }

// Vocab returns 50257.
func (GPT2Tokenizer) Vocab() int { return GPT2Vocab }

// EOT returns 50256, the id of "<|endoftext|>".
func (GPT2Tokenizer) EOT() int32 { return GPT2EOT }

// Encode appends the ids of text to dst and returns it. It is
// deterministic and safe for concurrent use.
//
// Special tokens are not recognised: the string "<|endoftext|>" in text is
// ordinary text and encodes to several ids, never to EOT, so that a corpus
// cannot forge a document boundary (tiktoken's encode_ordinary). Callers
// that want EOT append it themselves.
//
// Valid UTF-8 encodes exactly as tiktoken's r50k_base encode_ordinary.
// tiktoken defines nothing for invalid UTF-8, which Encode still encodes
// losslessly: each byte that is not part of a valid UTF-8 sequence becomes
// the id of that single byte, and the valid runs between such bytes are
// encoded independently of each other.
//
// Encode splits text into pieces itself (package pretok, equivalent to
// r50k_base's regular expression and tested against it) and looks each
// piece up in the vocabulary; only pieces that are not a single token go
// through tiktoken-go's BPE, one piece per call, behind a fixed-size
// cache. That is 5 to 15 times faster than handing tiktoken-go the whole
// text, and allocates only for pieces the cache misses.
//
// Like tiktoken's, the BPE takes time quadratic in the length of a piece
// (a run of letters, of digits or of punctuation, or of whitespace), so
// pieces longer than gpt2MaxPiece bytes are merged in chunks; the ids then
// differ from tiktoken's for that piece only, and still decode to the same
// bytes. The longest piece in the shared corpora is 249 bytes, in the Go
// distribution's source 2180.
func (GPT2Tokenizer) Encode(dst []int32, text []byte) []int32 {
	v := gpt2Load()
	for len(text) > 0 {
		n := pretok.ValidPrefix(text)
		for valid := text[:n]; len(valid) > 0; {
			p := pretok.GPT2(valid)
			if id, ok := v.ranks[string(valid[:p])]; ok {
				dst = append(dst, int32(id))
			} else {
				dst = v.bpeLong(dst, valid[:p])
			}
			valid = valid[p:]
		}
		if text = text[n:]; len(text) > 0 {
			dst = append(dst, v.byteID[text[0]]) // an invalid byte
			text = text[1:]
		}
	}
	return dst
}

// Decode appends the bytes of ids to dst and returns it. EOT decodes to
// nothing, and ids outside 0..50255 are skipped. Decode works on bytes, not
// characters: an id sequence that splits a UTF-8 character across ids
// decodes to exactly the bytes that were encoded, so
// Decode(nil, Encode(nil, x)) == x for every x. It is safe for concurrent
// use.
func (GPT2Tokenizer) Decode(dst []byte, ids []int32) []byte {
	v := gpt2Load()
	for _, id := range ids {
		if id >= 0 && id < GPT2EOT {
			dst = append(dst, v.bytes[v.off[id]:v.off[id+1]]...)
		}
	}
	return dst
}

// gpt2MaxPiece bounds the bytes BPE merges at once. BPE time grows with the
// square of a piece's length, so one pathological piece (a megabyte of one
// letter in an untrusted file) would stall tokenisation for minutes. Longer
// pieces are merged in chunks of at most this many bytes, cut at character
// boundaries; below it, and on every real corpus seen, the ids are exactly
// tiktoken's.
const gpt2MaxPiece = 4096

// bpeLong appends the ids of a piece that is not a single token, in chunks
// of at most gpt2MaxPiece bytes.
func (v *gpt2Vocabulary) bpeLong(dst []int32, piece []byte) []int32 {
	for len(piece) > gpt2MaxPiece {
		cut := gpt2MaxPiece
		for cut > 0 && piece[cut]&0xC0 == 0x80 { // don't split a UTF-8 character
			cut--
		}
		dst = append(dst, v.bpe(piece[:cut])...)
		piece = piece[cut:]
	}
	return append(dst, v.bpe(piece)...)
}

// bpe returns the ids of a piece that is not a single token, from
// tiktoken-go's BPE through a cache; the result must not be modified.
// tiktoken-go's regular expression splits a piece alone into that same one
// piece, so EncodeOrdinary of it is the BPE of the piece.
func (v *gpt2Vocabulary) bpe(piece []byte) []int32 {
	slot := &v.cache[maphash.Bytes(v.seed, piece)%uint64(len(v.cache))]
	if e := slot.Load(); e != nil && e.piece == string(piece) {
		return e.ids
	}
	e := &gpt2Cached{piece: string(piece)}
	for _, id := range v.enc.EncodeOrdinary(e.piece) {
		e.ids = append(e.ids, int32(id))
	}
	slot.Store(e)
	return e.ids
}

// gpt2Cached is one entry of gpt2Vocabulary's BPE cache.
type gpt2Cached struct {
	piece string
	ids   []int32
}

// gpt2Vocabulary is the loaded r50k_base encoding; only its cache is
// written after gpt2Load returns it.
type gpt2Vocabulary struct {
	enc    *tiktoken.Tiktoken
	ranks  map[string]int      // token bytes to id, BPE tokens only
	bytes  []byte              // the bytes of every BPE token, in id order
	off    [GPT2EOT + 1]uint32 // token id's bytes are bytes[off[id]:off[id+1]]
	byteID [256]int32          // the id of each single byte

	// cache memoises bpe: a direct-mapped table, lock-free, that a new
	// piece overwrites. It only remembers a pure function, so it never
	// changes a result, and its size is fixed: 64k pieces, a few MB.
	seed  maphash.Seed
	cache [1 << 16]atomic.Pointer[gpt2Cached]
}

var gpt2Vocab struct {
	once sync.Once
	v    *gpt2Vocabulary
	err  error
}

// gpt2Load returns the vocabulary, reading it on the first call. The
// vocabulary is part of the binary, so failing to read it is a build defect
// and panics; TokenizerByName reports it as an error instead.
func gpt2Load() *gpt2Vocabulary {
	v, err := gpt2LoadErr()
	if err != nil {
		panic(err)
	}
	return v
}

func gpt2LoadErr() (*gpt2Vocabulary, error) {
	gpt2Vocab.once.Do(func() {
		gpt2Vocab.v, gpt2Vocab.err = loadGPT2()
		if gpt2Vocab.err != nil {
			gpt2Vocab.err = fmt.Errorf("model: gpt2 vocabulary: %w", gpt2Vocab.err)
		}
	})
	return gpt2Vocab.v, gpt2Vocab.err
}

// loadGPT2 builds the encoding from the embedded ranks without going
// through tiktoken.GetEncoding, whose default loader downloads the file and
// caches it on disk: here no code path can reach the network.
func loadGPT2() (*gpt2Vocabulary, error) {
	ranks, err := tiktoken_loader.NewOfflineLoader().LoadTiktokenBpe(gpt2File)
	if err != nil {
		return nil, err
	}
	if len(ranks) != GPT2EOT {
		return nil, fmt.Errorf("%s has %d tokens, want %d", gpt2File, len(ranks), GPT2EOT)
	}
	v := &gpt2Vocabulary{ranks: ranks, seed: maphash.MakeSeed()}
	tokens := make([]string, GPT2EOT)
	size := 0
	for tok, id := range ranks {
		if id < 0 || id >= GPT2EOT || tokens[id] != "" || tok == "" {
			return nil, fmt.Errorf("%s: bad or repeated rank %d for %q", gpt2File, id, tok)
		}
		tokens[id] = tok
		size += len(tok)
	}
	v.bytes = make([]byte, 0, size)
	for id, tok := range tokens {
		v.off[id] = uint32(len(v.bytes))
		v.bytes = append(v.bytes, tok...)
	}
	v.off[GPT2EOT] = uint32(len(v.bytes))
	for b := range 256 {
		id, ok := ranks[string([]byte{byte(b)})]
		if !ok {
			return nil, fmt.Errorf("%s has no token for byte %#02x", gpt2File, b)
		}
		v.byteID[b] = int32(id)
	}
	special := map[string]int{tiktoken.ENDOFTEXT: GPT2EOT}
	bpe, err := tiktoken.NewCoreBPE(ranks, special, gpt2Pattern)
	if err != nil {
		return nil, err
	}
	v.enc = tiktoken.NewTiktoken(bpe, &tiktoken.Encoding{
		Name: "r50k_base", PatStr: gpt2Pattern, MergeableRanks: ranks,
		SpecialTokens: special, ExplicitNVocab: GPT2Vocab,
	}, map[string]any{tiktoken.ENDOFTEXT: true})
	return v, nil
}
