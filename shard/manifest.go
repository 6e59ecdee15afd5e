package shard

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/model/chat"
)

// ManifestName is the manifest's file name inside a dataset directory.
const ManifestName = "manifest.json"

// ErrBadManifest: a manifest does not decode or its fields are
// inconsistent (wrapped with the file and the field at fault).
var ErrBadManifest = errors.New("shard: bad manifest")

// Split names one of a dataset's two parts.
type Split string

// The splits.
const (
	Train   Split = "train"
	Heldout Split = "heldout"
)

// Manifest describes a dataset; it is manifest.json. Field order is the
// canonical order the id is computed in: do not reorder.
type Manifest struct {
	// ID is the hex SHA-256 of the content (see the package comment).
	ID string `json:"id"`
	// Name labels the dataset for people; it is not part of the id.
	Name          string `json:"name"`
	FormatVersion int    `json:"format_version"`
	// LossMask says that every shard carries a loss mask (format version
	// 2): the loss counts only on the targets it marks. Without one, every
	// target counts. It is omitted when false, like every field added
	// since version 1, so that older datasets keep their ids.
	LossMask  bool    `json:"loss_mask,omitempty"`
	Tokenizer string  `json:"tokenizer"`
	Vocab     int     `json:"vocab"`
	EOT       int32   `json:"eot"`
	SeqLen    int     `json:"seq_len"`
	Holdout   float64 `json:"holdout"` // fraction of documents held out
	// Shards lists train shards, then held-out shards, each in stream
	// order: global sequence ids follow this order.
	Shards []ShardEntry `json:"shards"`
	Totals Totals       `json:"totals"`
	Source SourceStats  `json:"source"`
}

// ShardEntry is one shard in a manifest.
type ShardEntry struct {
	Hash      string `json:"hash"` // hex SHA-256 of the file, its name
	Split     Split  `json:"split"`
	Sequences int64  `json:"sequences"`
	Tokens    int64  `json:"tokens"` // stored tokens: Sequences·SeqLen+1
	Bytes     int64  `json:"bytes"`  // file length
}

// Totals sums the shards of each split.
type Totals struct {
	Train   SplitTotals `json:"train"`
	Heldout SplitTotals `json:"heldout"`
}

// SplitTotals sums the shards of one split.
type SplitTotals struct {
	Shards    int   `json:"shards"`
	Sequences int64 `json:"sequences"`
	Tokens    int64 `json:"tokens"` // stored tokens, as in ShardEntry
	Bytes     int64 `json:"bytes"`  // shard file bytes
	// Dropped counts the tokens of the split's stream after its last whole
	// sequence, in no shard.
	Dropped int64 `json:"dropped_tokens"`
}

// SourceStats describes the input a dataset was prepared from. Paths are
// left out so that the id does not depend on where the input lay.
type SourceStats struct {
	Format Format `json:"format"`          // text, jsonl, chat or prompt-completion
	Field  string `json:"field,omitempty"` // the JSONL field read
	// ChatTemplate names the template chat and prompt-completion records
	// were rendered with (chat.Template.Name).
	ChatTemplate string `json:"chat_template,omitempty"`
	Files        int64  `json:"files"`      // regular files found
	Documents    int64  `json:"documents"`  // documents tokenised
	Bytes        int64  `json:"bytes"`      // input bytes read as text (not binary or oversized files)
	TextBytes    int64  `json:"text_bytes"` // bytes of the documents' text
	Tokens       int64  `json:"tokens"`     // the documents' tokens, EOT included
	// Trained counts the documents' tokens the loss counts on (with a loss
	// mask); TrainedCut counts those of them that are targets of a
	// sequence that does not hold the start of their record, which the
	// model then predicts without the whole prompt.
	Trained    int64 `json:"trained_tokens,omitempty"`
	TrainedCut int64 `json:"trained_tokens_cut,omitempty"`
	// Skipped counts files and records left out, by Reason.
	Skipped map[Reason]int64 `json:"skipped,omitempty"`
	// Cut counts the files over Config.CutAbove that were cut into
	// documents; nil when none was.
	Cut *CutStats `json:"cut,omitempty"`
}

// CutStats counts the text files cut into documents (CutDocuments).
type CutStats struct {
	Above         int64 `json:"above"`          // Config.CutAbove: files of more bytes were cut
	DocumentBytes int64 `json:"document_bytes"` // Config.DocumentBytes, the target size
	Paragraphs    int64 `json:"paragraphs"`     // files cut at blank lines (CutParagraphs)
	Fixed         int64 `json:"fixed"`          // files without blank lines, cut into fixed-size pieces (CutFixed)
	Documents     int64 `json:"documents"`      // documents the cut files gave
}

// Of returns the totals of split s.
func (t *Totals) Of(s Split) *SplitTotals {
	if s == Heldout {
		return &t.Heldout
	}
	return &t.Train
}

// SplitShards returns the entries of split s, in manifest order.
func (m *Manifest) SplitShards(s Split) []ShardEntry {
	var out []ShardEntry
	for _, e := range m.Shards {
		if e.Split == s {
			out = append(out, e)
		}
	}
	return out
}

// ShardRefs returns each distinct shard once (two shards with the same
// content share a file), in manifest order, for Place.
func (m *Manifest) ShardRefs() []ShardRef {
	seen := make(map[string]bool, len(m.Shards))
	var out []ShardRef
	for _, e := range m.Shards {
		if !seen[e.Hash] {
			seen[e.Hash] = true
			out = append(out, ShardRef{Hash: e.Hash, Bytes: e.Bytes})
		}
	}
	return out
}

// ComputeID returns the id m's content gives: the hex SHA-256 of m's
// compact JSON encoding with ID and Name empty.
func (m *Manifest) ComputeID() string {
	c := *m
	c.ID, c.Name = "", ""
	b, err := json.Marshal(&c)
	if err != nil {
		panic("shard: encoding a manifest: " + err.Error()) // no field can fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Encode returns manifest.json's bytes: indented JSON, with a newline.
func (m *Manifest) Encode() []byte {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		panic("shard: encoding a manifest: " + err.Error())
	}
	return append(b, '\n')
}

// WriteManifest writes m to dir/manifest.json atomically.
func WriteManifest(dir string, m *Manifest) error {
	path := filepath.Join(dir, ManifestName)
	if err := atomicfile.WriteBytes(path, m.Encode(), 0o644); err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		return fmt.Errorf("shard: writing %s: %w", path, err)
	}
	return nil
}

// ReadManifest reads and checks dir/manifest.json (or the file itself when
// path names one). Errors name the file. The manifest is opened once, and
// must be a regular file (not a symbolic link) of at most MaxManifestBytes
// (internal/safefile).
func ReadManifest(path string) (*Manifest, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, ManifestName)
	}
	b, err := safefile.ReadFileNoFollow(path, MaxManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("shard: manifest: %w", err)
	}
	m, err := DecodeManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// MaxManifestBytes bounds what DecodeManifest accepts (a million shards
// take about 200 MB).
const MaxManifestBytes = 256 << 20

// DecodeManifest decodes a manifest and checks it: known fields only, every
// field in range, totals that add up, an id that matches the content. It
// never panics; errors wrap ErrBadManifest and name the field.
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d allowed", ErrBadManifest, len(b), MaxManifestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: truncated: the JSON ends after %d bytes", ErrBadManifest, len(b))
		}
		return nil, fmt.Errorf("%w: %s", ErrBadManifest, jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object at byte %d", ErrBadManifest, dec.InputOffset())
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// jsonProblem says what is wrong with JSON that did not decode without
// quoting bytes that are not JSON (a node decodes objects by hash; the
// answer must not show the content of a file that is not a manifest): the
// offset of a syntax error, the key of a value of the wrong type, the name
// of an unknown field (at most 64 bytes of it).
func jsonProblem(err error) string {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("not JSON: a syntax error at byte %d", se.Offset)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return fmt.Sprintf("field %s holds a JSON %s, want %v", te.Field, te.Value, te.Type)
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return "unknown field " + fmt.Sprintf("%.64s", f)
	}
	return "not one JSON object"
}

// Validate checks every field of m, that the totals add up and that the id
// matches the content. Errors wrap ErrBadManifest and name the field.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadManifest}, args...)...)
	}
	switch {
	case m.FormatVersion != FormatVersion && m.FormatVersion != FormatVersionMasked:
		return bad("format_version %d, this build reads %d and %d", m.FormatVersion, FormatVersion, FormatVersionMasked)
	case m.FormatVersion != headerVersion(m.LossMask):
		return bad("format_version %d with loss_mask %v, want format_version %d", m.FormatVersion, m.LossMask, headerVersion(m.LossMask))
	case !validTokenizerName(m.Tokenizer):
		return bad("tokenizer %q: want 1..%d of [a-zA-Z0-9_.-]", m.Tokenizer, MaxTokenizerName)
	case m.Vocab < 1 || int64(m.Vocab) > 1<<32-1:
		return bad("vocab %d out of range", m.Vocab)
	case m.EOT < 0 || int(m.EOT) >= m.Vocab:
		return bad("eot %d outside the vocabulary of %d", m.EOT, m.Vocab)
	case m.SeqLen < 1 || m.SeqLen > MaxSeqLen:
		return bad("seq_len %d, want 1..%d", m.SeqLen, MaxSeqLen)
	case !(m.Holdout >= 0 && m.Holdout <= 1):
		return bad("holdout %v, want a fraction in [0, 1]", m.Holdout)
	case len(m.Name) > 256 || !utf8.ValidString(m.Name):
		return bad("name: want at most 256 bytes of UTF-8")
	case !m.Source.Format.valid():
		return bad("source.format %q, want text, jsonl, chat or prompt-completion", m.Source.Format)
	case m.Source.Format.Masked() != m.LossMask:
		return bad("source.format %s with loss_mask %v: chat and prompt-completion datasets, and only they, have a loss mask", m.Source.Format, m.LossMask)
	case (m.Source.ChatTemplate != "") != m.Source.Format.Masked():
		return bad("source.chat_template %q with source.format %s", m.Source.ChatTemplate, m.Source.Format)
	case m.Source.Files < 0 || m.Source.Documents < 0 || m.Source.Bytes < 0 || m.Source.TextBytes < 0 || m.Source.Tokens < 0:
		return bad("source: negative count")
	case m.Source.Trained < 0 || m.Source.Trained > m.Source.Tokens || m.Source.TrainedCut < 0 || m.Source.TrainedCut > m.Source.Trained:
		return bad("source: trained_tokens %d and trained_tokens_cut %d, of %d tokens", m.Source.Trained, m.Source.TrainedCut, m.Source.Tokens)
	case !m.LossMask && m.Source.Trained != 0:
		return bad("source.trained_tokens %d without a loss mask", m.Source.Trained)
	case m.Source.Cut != nil && (m.Source.Cut.Above < 1 || m.Source.Cut.DocumentBytes < 1 || m.Source.Cut.Paragraphs < 0 || m.Source.Cut.Fixed < 0 ||
		m.Source.Cut.Documents < m.Source.Cut.Paragraphs+m.Source.Cut.Fixed || m.Source.Cut.Documents > m.Source.Documents):
		return bad("source.cut %+v: counts out of range (of %d documents)", *m.Source.Cut, m.Source.Documents)
	}
	if m.LossMask {
		if _, err := chat.ByName(m.Source.ChatTemplate); err != nil {
			return bad("source.chat_template %q, want llama3 or chatml", m.Source.ChatTemplate)
		}
	}
	for r, n := range m.Source.Skipped {
		if n < 0 {
			return bad("source.skipped[%q] = %d", r, n)
		}
	}
	var sum Totals
	for i, e := range m.Shards {
		field := fmt.Sprintf("shards[%d]", i)
		switch {
		case !validHash(e.Hash):
			return bad("%s.hash %q: want 64 lowercase hex digits", field, e.Hash)
		case e.Split != Train && e.Split != Heldout:
			return bad("%s.split %q: want train or heldout", field, e.Split)
		case e.Split == Train && i > 0 && m.Shards[i-1].Split == Heldout:
			return bad("%s: a train shard after held-out ones (train shards come first)", field)
		case e.Sequences < 1 || e.Sequences > MaxPayloadBytes:
			return bad("%s.sequences %d out of range", field, e.Sequences)
		case e.Tokens != e.Sequences*int64(m.SeqLen)+1:
			return bad("%s.tokens %d, %d sequences of %d tokens need %d", field, e.Tokens, e.Sequences, m.SeqLen, e.Sequences*int64(m.SeqLen)+1)
		case e.Bytes < fixedHeaderSize+5 || e.Bytes > 3*MaxPayloadBytes:
			return bad("%s.bytes %d out of range", field, e.Bytes)
		}
		t := sum.Of(e.Split)
		t.Shards++
		t.Sequences += e.Sequences
		t.Tokens += e.Tokens
		t.Bytes += e.Bytes
	}
	for _, s := range []Split{Train, Heldout} {
		got, want := m.Totals.Of(s), sum.Of(s)
		want.Dropped = got.Dropped
		if *got != *want {
			return bad("totals.%s %+v, the shards add up to %+v", s, *got, *want)
		}
		if got.Dropped < 0 {
			return bad("totals.%s.dropped_tokens %d", s, got.Dropped)
		}
	}
	if id := m.ComputeID(); m.ID != id {
		return bad("id %q does not match the content (whose id is %s)", m.ID, id)
	}
	return nil
}

// Format is how Prepare reads input files.
type Format string

// The input formats.
const (
	// FormatText: each file is one document of UTF-8 text.
	FormatText Format = "text"
	// FormatJSONL: each line of each file is a JSON object, one document,
	// whose text is the string in Config.Field.
	FormatJSONL Format = "jsonl"
	// FormatChat: each line is a JSON object whose "messages" is a
	// conversation, [{"role": "system"|"user"|"assistant", "content":
	// "..."}, ...], rendered with Config.ChatTemplate; the loss counts on
	// the assistant messages.
	FormatChat Format = "chat"
	// FormatPromptCompletion: each line is a JSON object with strings
	// "prompt" and "completion", rendered with Config.ChatTemplate as a
	// user message and the assistant's answer; the loss counts on the
	// completion.
	FormatPromptCompletion Format = "prompt-completion"
)

func (f Format) valid() bool {
	return f == FormatText || f == FormatJSONL || f.Masked()
}

// Masked reports whether a dataset of this format has a loss mask: chat
// and prompt-completion datasets do.
func (f Format) Masked() bool { return f == FormatChat || f == FormatPromptCompletion }

// jsonLines reports whether files of this format hold one record a line.
func (f Format) jsonLines() bool { return f == FormatJSONL || f.Masked() }
