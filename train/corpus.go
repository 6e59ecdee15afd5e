package train

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"unicode/utf8"

	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/shard"
)

// Corpus errors. Each is wrapped with the path at fault.
var (
	ErrNoInput   = errors.New("train: no input paths given")
	ErrEmptyFile = errors.New("train: file is empty")
	ErrNotText   = errors.New("train: file is not UTF-8 text")
	ErrNoText    = errors.New("train: no text files found")
	ErrTooSmall  = errors.New("train: corpus too small")
)

// CorpusOptions says how to read a text corpus.
type CorpusOptions struct {
	// HoldoutEvery puts about one document in HoldoutEvery into the held-out
	// split, chosen by a hash of the document's bytes (so the split does not
	// depend on file order or paths). 0 means no held-out split.
	HoldoutEvery int
	// MaxBytes stops reading once this many bytes are in (0: no limit;
	// remaining files are skipped, in sorted path order).
	MaxBytes int64
	// CutAbove: a file of more bytes is cut into documents of about
	// DocumentBytes (shard.CutDocuments), so that a corpus of one large
	// file gets a held-out split, as `braid data prepare` does (0: a file
	// is always one document).
	CutAbove, DocumentBytes int64
	// File, if set, is called for every file read, in order, with its
	// path, its bytes (not to be kept), and the documents and tokens (EOT
	// included) it gave: a provenance record names the files a run read.
	File func(path string, text []byte, documents, tokens int)
}

// Corpus is a tokenised text corpus: documents separated by EOT, split into a
// training and a held-out token stream.
type Corpus struct {
	Train, Heldout []uint16 // token ids (vocabularies up to 65536)
	Files          int      // text files read
	Skipped        int      // files in directories skipped as not text or empty
	Bytes          int64    // bytes of text read
	Documents      int      // documents: a file, or the pieces it was cut into
	// Files over CutAbove, cut at blank lines (CutParagraphs) or into
	// fixed-size pieces (CutFixed).
	CutParagraphs, CutFixed int
}

// LoadCorpus reads text files and directories (walked recursively, in sorted
// order) and tokenises each file as one document, or a file over
// opt.CutAbove as the documents it is cut into. A path named explicitly
// that is missing, empty or not UTF-8 text is an error naming it; inside a
// directory such files are skipped and counted. Hidden files and directories
// (starting with ".") inside a walked directory are skipped.
func LoadCorpus(paths []string, tok model.Tokenizer, opt CorpusOptions) (*Corpus, error) {
	if len(paths) == 0 {
		return nil, ErrNoInput
	}
	if tok.Vocab() > 1<<16 {
		return nil, fmt.Errorf("train: tokenizer %s has %d ids, more than a corpus can hold", tok.Name(), tok.Vocab())
	}
	if opt.CutAbove < 0 || (opt.CutAbove > 0 && opt.DocumentBytes < 64) {
		return nil, fmt.Errorf("train: CorpusOptions: CutAbove %d and DocumentBytes %d, want CutAbove ≥ 0 and, when cutting, documents of ≥ 64 bytes", opt.CutAbove, opt.DocumentBytes)
	}
	c := &Corpus{}
	var ids []int32
	add := func(path string, text []byte) {
		docs := [][]byte{text}
		if opt.CutAbove > 0 && int64(len(text)) > opt.CutAbove {
			var how shard.CutMethod
			docs, how = shard.CutDocuments(text, int(opt.DocumentBytes))
			if how == shard.CutParagraphs {
				c.CutParagraphs++
			} else {
				c.CutFixed++
			}
		}
		tokens := 0
		for _, doc := range docs {
			ids = tok.Encode(ids[:0], doc)
			tokens += len(ids) + 1
			dst := &c.Train
			if opt.HoldoutEvery > 0 && HeldOut(doc, opt.HoldoutEvery) {
				dst = &c.Heldout
			}
			for _, id := range ids {
				*dst = append(*dst, uint16(id))
			}
			*dst = append(*dst, uint16(tok.EOT()))
		}
		if opt.File != nil {
			opt.File(path, text, len(docs), tokens)
		}
		c.Files++
		c.Documents += len(docs)
		c.Bytes += int64(len(text))
	}
	full := func() bool { return opt.MaxBytes > 0 && c.Bytes >= opt.MaxBytes }
	for _, p := range paths {
		if full() {
			break
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("train: corpus path %s: %w", p, err)
		}
		if !st.IsDir() {
			text, err := readText(p)
			if err != nil {
				return nil, err
			}
			add(p, text)
			continue
		}
		var files []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("train: walking %s: %w", path, err)
			}
			if path != p && len(d.Name()) > 0 && d.Name()[0] == '.' {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.Type().IsRegular() {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
		for _, f := range files {
			if full() {
				break
			}
			text, err := readText(f)
			if errors.Is(err, ErrEmptyFile) || errors.Is(err, ErrNotText) {
				c.Skipped++
				continue
			}
			if err != nil {
				return nil, err
			}
			add(f, text)
		}
	}
	if c.Files == 0 {
		return nil, fmt.Errorf("%w in %v (%d files skipped as empty or binary)", ErrNoText, paths, c.Skipped)
	}
	return c, nil
}

// HeldOut reports whether a document belongs to the held-out split: about one
// in every, decided by the SHA-256 of its bytes, so the split is the same on
// every machine and for any file names or order.
func HeldOut(doc []byte, every int) bool {
	sum := sha256.Sum256(doc)
	return binary.BigEndian.Uint64(sum[:8])%uint64(every) == 0
}

// maxFileBytes bounds one document; larger files are not what a text corpus
// holds and would only exhaust memory.
const maxFileBytes = 256 << 20

// readText reads a regular file of at most maxFileBytes and checks that it is non-empty UTF-8 text without
// NUL bytes.
func readText(path string) ([]byte, error) {
	b, err := safefile.ReadFile(path, maxFileBytes) // one open; a device or FIFO is refused before a read
	if err != nil {
		return nil, fmt.Errorf("train: corpus file: %w", err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrEmptyFile, path)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return nil, fmt.Errorf("%w: %s has a NUL byte at offset %d", ErrNotText, path, i)
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: %s is not valid UTF-8", ErrNotText, path)
	}
	return b, nil
}

// Sampler draws training windows from a token stream with a seeded source.
type Sampler struct {
	tokens []uint16
	src    *rand.PCG // the position in the random sequence: saved in checkpoints
	rng    *rand.Rand
}

// NewSampler returns a sampler over tokens that needs windows of T+1
// tokens; it fails if the stream is shorter than that.
func NewSampler(tokens []uint16, T int, seed uint64) (*Sampler, error) {
	if len(tokens) < T+1 {
		return nil, fmt.Errorf("%w: %d tokens, need at least %d for one sequence", ErrTooSmall, len(tokens), T+1)
	}
	src := rand.NewPCG(seed, 0x73616d706c65)
	return &Sampler{tokens: tokens, src: src, rng: rand.New(src)}, nil
}

// State returns the sampler's position, for SetState to continue from.
func (s *Sampler) State() []byte {
	b, _ := s.src.MarshalBinary() // never fails for PCG
	return b
}

// SetState continues the sampler from a position State returned.
func (s *Sampler) SetState(b []byte) error {
	if err := s.src.UnmarshalBinary(b); err != nil {
		return fmt.Errorf("train: sampler state: %w", err)
	}
	return nil
}

// Next fills inputs and targets (B·T each) with B random windows: targets
// are the inputs shifted by one token.
func (s *Sampler) Next(inputs, targets []int32, B, T int) {
	for b := 0; b < B; b++ {
		start := s.rng.IntN(len(s.tokens) - T)
		w := s.tokens[start : start+T+1]
		for t := 0; t < T; t++ {
			inputs[b*T+t] = int32(w[t])
			targets[b*T+t] = int32(w[t+1])
		}
	}
}
