package shard

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/chat"
)

// Prepare errors.
var (
	// ErrBadInput: a file or record is bad (Reason.Bad) and Config.SkipBad
	// is off. The error names the first one.
	ErrBadInput = errors.New("shard: bad input")
	// ErrOutExists: Config.Out exists and is not an empty directory.
	ErrOutExists = errors.New("shard: output exists")
	// ErrNoDocuments: the inputs hold no document to tokenise.
	ErrNoDocuments = errors.New("shard: no documents")
	// ErrTooSmall: the documents do not fill one sequence.
	ErrTooSmall = errors.New("shard: too little text")
)

// Config says how Prepare builds a dataset.
type Config struct {
	// Inputs are files and directories. A directory is walked recursively
	// in lexical order; only regular files are read: symbolic links are not
	// followed, and names starting with "." are skipped (both counted).
	Inputs []string
	// Out is the dataset directory to create. It must not exist or be an
	// empty directory; its parent is created if needed.
	Out string
	// Name labels the dataset; empty means the base name of the first
	// input (without extension when it is a file).
	Name string
	// Tokenizer tokenises documents. It must be safe for concurrent use
	// (ByteTokenizer and GPT2Tokenizer are).
	Tokenizer model.Tokenizer
	// SeqLen is T, the tokens of a training sequence.
	SeqLen int
	// Holdout is the fraction of documents held out (HeldOut), in [0, 1].
	Holdout float64
	// Format says what a document is: a whole text file, or a JSONL record
	// (of text, a chat conversation, or a prompt and its completion).
	Format Format
	// Field is the JSONL field holding a record's text (FormatJSONL).
	Field string
	// ChatTemplate renders the records of FormatChat and
	// FormatPromptCompletion; Tokenizer must have its control tokens
	// (chat.NewEncoder).
	ChatTemplate chat.Template
	// SkipBad skips bad files and records (Reason.Bad), counting them;
	// otherwise the first one fails Prepare.
	SkipBad bool
	// ShardBytes bounds the uncompressed payload of a shard (its tokens,
	// and its loss mask if any); a shard holds as many whole sequences as
	// fit (at least one).
	ShardBytes int64
	// MaxDocumentBytes bounds a text file; a larger one is bad (too_large).
	MaxDocumentBytes int64
	// CutAbove: a text file (FormatText) of more bytes is cut into
	// documents of about DocumentBytes (CutDocuments: at blank lines, or
	// into fixed-size pieces when it has none), so that a corpus of one
	// large file gets a held-out split. 0: never cut.
	CutAbove int64
	// DocumentBytes is the target size of the documents a file over
	// CutAbove is cut into.
	DocumentBytes int64
	// MaxRecordBytes bounds a JSONL line (without its line ending); a
	// longer one is a bad record (too_large).
	MaxRecordBytes int
	// Workers tokenise in parallel (0: GOMAXPROCS). The output does not
	// depend on it.
	Workers int
	// Progress, if set, is called from Prepare's goroutine as the input is
	// read, with running totals; it must not block for long.
	Progress func(Progress)
}

// DefaultConfig is the configuration `braid data prepare` starts from: the
// byte tokenizer and the context length of the bundled base model
// (models/base-en: 256), 5% held out, 16 MiB shards, text files over 1 MiB
// cut into documents of about 8 KiB (a 1 MiB file gives about 128, of
// which none is held out with a chance of about 0.1%).
func DefaultConfig() Config {
	return Config{
		Tokenizer:        model.ByteTokenizer{},
		SeqLen:           256,
		Holdout:          0.05,
		Format:           FormatText,
		Field:            "text",
		ShardBytes:       16 << 20,
		MaxDocumentBytes: 256 << 20,
		MaxRecordBytes:   16 << 20,
		CutAbove:         1 << 20,
		DocumentBytes:    8 << 10,
	}
}

// Validate checks each field and names the one at fault.
func (c *Config) Validate() error {
	switch {
	case len(c.Inputs) == 0:
		return errors.New("shard: Config.Inputs: no input paths")
	case c.Out == "":
		return errors.New("shard: Config.Out: no output directory")
	case c.Tokenizer == nil:
		return errors.New("shard: Config.Tokenizer is nil")
	case c.Tokenizer.Vocab() < 1 || int64(c.Tokenizer.Vocab()) > 1<<32-1 || c.Tokenizer.EOT() < 0 || int(c.Tokenizer.EOT()) >= c.Tokenizer.Vocab():
		return fmt.Errorf("shard: Config.Tokenizer %s: vocab %d and EOT %d out of range", c.Tokenizer.Name(), c.Tokenizer.Vocab(), c.Tokenizer.EOT())
	case !validTokenizerName(c.Tokenizer.Name()):
		return fmt.Errorf("shard: Config.Tokenizer: name %q is not 1..%d of [a-zA-Z0-9_.-]", c.Tokenizer.Name(), MaxTokenizerName)
	case c.SeqLen < 1 || c.SeqLen > MaxSeqLen:
		return fmt.Errorf("shard: Config.SeqLen %d, want 1..%d", c.SeqLen, MaxSeqLen)
	case !(c.Holdout >= 0 && c.Holdout <= 1):
		return fmt.Errorf("shard: Config.Holdout %v, want a fraction in [0, 1]", c.Holdout)
	case !c.Format.valid():
		return fmt.Errorf("shard: Config.Format %q, want text, jsonl, chat or prompt-completion", c.Format)
	case c.Format == FormatJSONL && c.Field == "":
		return errors.New("shard: Config.Field: empty, JSONL needs the name of the text field")
	case c.Format.Masked() && c.ChatTemplate.Name == "":
		return fmt.Errorf("shard: Config.ChatTemplate: none, the %s format needs one", c.Format)
	case c.ShardBytes < 1 || c.ShardBytes > MaxPayloadBytes:
		return fmt.Errorf("shard: Config.ShardBytes %d, want 1..%d", c.ShardBytes, MaxPayloadBytes)
	case int64(c.SeqLen+1)*int64(TokenWidth(c.Tokenizer.Vocab())) > MaxPayloadBytes:
		return fmt.Errorf("shard: Config.SeqLen %d: one sequence is more than a shard may hold", c.SeqLen)
	case c.MaxDocumentBytes < 1:
		return fmt.Errorf("shard: Config.MaxDocumentBytes %d, want ≥ 1", c.MaxDocumentBytes)
	case c.CutAbove < 0:
		return fmt.Errorf("shard: Config.CutAbove %d, want ≥ 0 (0: never cut a file into documents)", c.CutAbove)
	case c.CutAbove > 0 && (c.DocumentBytes < 64 || c.DocumentBytes > 1<<30):
		return fmt.Errorf("shard: Config.DocumentBytes %d, want 64..%d when files over CutAbove are cut", c.DocumentBytes, 1<<30)
	case c.MaxRecordBytes < 1:
		return fmt.Errorf("shard: Config.MaxRecordBytes %d, want ≥ 1", c.MaxRecordBytes)
	case c.Workers < 0:
		return fmt.Errorf("shard: Config.Workers %d, want ≥ 0", c.Workers)
	case len(c.Name) > 256 || !utf8.ValidString(c.Name):
		return errors.New("shard: Config.Name: want at most 256 bytes of UTF-8")
	}
	if c.Format.Masked() {
		if _, err := chat.NewEncoder(c.Tokenizer, c.ChatTemplate); err != nil {
			return fmt.Errorf("shard: Config.ChatTemplate: %w", err)
		}
	}
	return nil
}

// Progress is a running count of Prepare's work.
type Progress struct {
	Files, FilesTotal int64 // files read, of those found
	Bytes, BytesTotal int64 // input bytes read, of those found
	Documents         int64 // documents tokenised
	Tokens            int64 // tokens produced, EOT included
}

// Reason says why a file or record was left out.
type Reason string

// The reasons. Binary, empty, hidden and non-regular input is skipped
// always; the others are bad: they fail Prepare unless Config.SkipBad.
const (
	ReasonBinary       Reason = "binary"        // a NUL byte in the first BinarySniffBytes
	ReasonEmpty        Reason = "empty"         // an empty file, or a record whose text is ""
	ReasonHidden       Reason = "hidden"        // a name starting with "." in a walked directory
	ReasonNotRegular   Reason = "not_regular"   // a symlink, device, pipe or socket in a walked directory
	ReasonInvalidUTF8  Reason = "invalid_utf8"  // text that is not UTF-8
	ReasonTooLarge     Reason = "too_large"     // a file over MaxDocumentBytes or a record over MaxRecordBytes
	ReasonBadJSON      Reason = "bad_json"      // a JSONL line that is not a JSON object
	ReasonMissingField Reason = "missing_field" // a record without Config.Field
	ReasonNotString    Reason = "not_string"    // a record whose Config.Field is not a string
	ReasonBadMessages  Reason = "bad_messages"  // a chat record whose "messages" is not a list of {role, content} with known roles
	// Chat and prompt-completion records with nothing to train on:
	ReasonNoAnswer      Reason = "no_answer"       // a conversation without an assistant message
	ReasonPromptTooLong Reason = "prompt_too_long" // more tokens before the first answer than a sequence holds
)

// Bad reports whether input left out for r fails Prepare without
// Config.SkipBad.
func (r Reason) Bad() bool {
	switch r {
	case ReasonBinary, ReasonEmpty, ReasonHidden, ReasonNotRegular, ReasonNoAnswer, ReasonPromptTooLong:
		return false
	}
	return true
}

// Issue is a file or record that Prepare left out.
type Issue struct {
	Path   string
	Line   int // 1-based line of a JSONL record; 0 for a whole file
	Reason Reason
	Detail string
}

func (i Issue) String() string {
	where := i.Path
	if i.Line > 0 {
		where = fmt.Sprintf("%s:%d", i.Path, i.Line)
	}
	if i.Detail == "" {
		return fmt.Sprintf("%s: %s", where, i.Reason)
	}
	return fmt.Sprintf("%s: %s: %s", where, i.Reason, i.Detail)
}

// MaxIssues bounds Result.Issues; the manifest still counts every one.
const MaxIssues = 1000

// Result is what Prepare made.
type Result struct {
	Dir      string    // the dataset directory (Config.Out)
	Manifest *Manifest // as written to Dir/manifest.json
	// Issues lists input left out, in input order (the first MaxIssues).
	Issues []Issue
}

// HeldOut reports whether a document belongs to the held-out split: the
// first 8 bytes of its SHA-256, read as a big-endian uint64 x, give
// x / 2^64 < fraction. It depends only on the document's bytes, not on
// file names or order.
func HeldOut(doc []byte, fraction float64) bool {
	if fraction >= 1 {
		return true
	}
	sum := sha256.Sum256(doc)
	return float64(binary.BigEndian.Uint64(sum[:8]))/(1<<64) < fraction
}

// Prepare builds a dataset from cfg.Inputs in cfg.Out (see the package
// comment for what it writes). Everything is written into a temporary
// directory beside cfg.Out and renamed into place at the end, so cfg.Out
// either does not appear or holds a complete dataset. The output depends
// only on the inputs' bytes and cfg (not on Workers or timing).
//
// Documents are read, tokenised and packed as a stream: memory holds a
// bounded window of input and the shards being filled, not the corpus.
func Prepare(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	files, walkIssues, err := collectInputs(cfg.Inputs)
	if err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = defaultName(cfg.Inputs[0])
	}
	tmp, err := makeTempOut(cfg.Out)
	if err != nil {
		return nil, err
	}
	res, err := prepare(ctx, &cfg, files, walkIssues, tmp)
	if err == nil {
		err = publish(tmp, cfg.Out)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	res.Dir = cfg.Out
	return res, nil
}

// inputFile is a regular file to read.
type inputFile struct {
	path string
	size int64
}

// collectInputs lists the files to read, in order: each input path as
// given; a directory walked recursively in lexical order. Entries of walked
// directories that are hidden or not regular files are returned as issues.
func collectInputs(paths []string) ([]inputFile, []Issue, error) {
	var files []inputFile
	var issues []Issue
	for _, p := range paths {
		st, err := os.Stat(p) // an input named explicitly may be a symlink
		if err != nil {
			return nil, nil, fmt.Errorf("shard: input %w", err)
		}
		if st.Mode().IsRegular() {
			files = append(files, inputFile{p, st.Size()})
			continue
		}
		if !st.IsDir() {
			return nil, nil, fmt.Errorf("shard: input %s is neither a regular file nor a directory (%v)", p, st.Mode().Type())
		}
		err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("shard: walking %w", err)
			}
			if path == p {
				return nil
			}
			if strings.HasPrefix(d.Name(), ".") {
				issues = append(issues, Issue{Path: path, Reason: ReasonHidden})
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			switch {
			case d.IsDir():
				return nil
			case d.Type().IsRegular():
				info, err := d.Info()
				if err != nil {
					return fmt.Errorf("shard: input %w", err)
				}
				files = append(files, inputFile{path, info.Size()})
			default:
				issues = append(issues, Issue{Path: path, Reason: ReasonNotRegular, Detail: d.Type().String()})
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return files, issues, nil
}

// defaultName is the name of a dataset made from input first.
func defaultName(first string) string {
	abs, err := filepath.Abs(first)
	if err != nil {
		abs = first
	}
	if st, err := os.Stat(abs); err == nil && !st.IsDir() {
		base := filepath.Base(abs)
		return strings.TrimSuffix(base, filepath.Ext(base))
	}
	return filepath.Base(abs)
}

// makeTempOut checks that out may be created and makes the temporary
// directory beside it that Prepare writes into.
func makeTempOut(out string) (string, error) {
	st, err := os.Stat(out)
	switch {
	case err == nil && !st.IsDir():
		return "", fmt.Errorf("%w: %s is a file", ErrOutExists, out)
	case err == nil:
		entries, err := os.ReadDir(out)
		if err != nil {
			return "", fmt.Errorf("shard: output %w", err)
		}
		if len(entries) > 0 {
			return "", fmt.Errorf("%w: %s is not empty (%d entries); choose a new directory", ErrOutExists, out, len(entries))
		}
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("shard: output %w", err)
	}
	parent := filepath.Dir(filepath.Clean(out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("shard: output %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(filepath.Clean(out))+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("shard: output %w", err)
	}
	return tmp, nil
}

// publish renames the finished temporary directory to out (replacing an
// empty directory) and syncs the parent so the rename is durable.
func publish(tmp, out string) error {
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	// Go's Rename refuses to replace a directory, even an empty one;
	// os.Remove removes only an empty one, so nothing can be lost here.
	if err := os.Remove(out); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("shard: output %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("shard: moving the dataset into place: %w", err)
	}
	if d, err := os.Open(filepath.Dir(filepath.Clean(out))); err == nil {
		d.Sync() // best effort: some file systems refuse to sync a directory
		d.Close()
	}
	return nil
}

// The pipeline. One reader goroutine turns files into chunks of documents in
// input order; workers check and tokenise the documents of a chunk; the calling
// goroutine takes the chunks back in order and packs their tokens into
// shards, which the shardWriter compresses and writes, several at a time.
// Order is kept by handing each chunk to the workers and, in the same
// order, to the packer, which waits for each chunk to be done. Memory is
// bounded by the budget of input in flight and by the shards being filled
// and written, whatever the size of the input.

// document is one document (or one left-out file or record) in input order.
type document struct {
	path string
	line int    // JSONL line, 0 for a text file
	raw  []byte // the file (text) or the line (JSONL), until tokenised
	// Set by the reader (for a file left out) or by a worker:
	issue   *Issue
	err     error  // a failure that ends Prepare (an unreadable file)
	tokens  []byte // the document's tokens and EOT, encoded for the shard
	trained []byte // with a loss mask: per token, 1 if the loss counts on it
	heldout bool
	text    int64 // bytes of the document's text
	// A document cut from a larger file (Config.CutAbove): how, and
	// whether it is the file's first.
	cut      CutMethod
	firstCut bool
}

// inputChunk is a run of documents, about chunkBytes of input; done is closed when
// a worker has processed them all.
type inputChunk struct {
	docs []document
	cost int64 // input bytes held, charged against the reader's budget
	// Running totals up to the end of this chunk: files done, input bytes
	// done (read, or skipped unread), input bytes read as text.
	files, bytes, read int64
	done               chan struct{}
}

const (
	chunkBytes    = 1 << 20  // input bytes per chunk
	inFlightBytes = 32 << 20 // input bytes read but not yet packed (one chunk may exceed it)
)

// prepare runs the pipeline into tmp and writes the manifest there.
func prepare(ctx context.Context, cfg *Config, files []inputFile, walkIssues []Issue, tmp string) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := cfg.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	width := TokenWidth(cfg.Tokenizer.Vocab())
	masked := cfg.Format.Masked()
	var enc *chat.Encoder
	if masked {
		var err error
		if enc, err = chat.NewEncoder(cfg.Tokenizer, cfg.ChatTemplate); err != nil {
			return nil, err
		}
	}

	work := make(chan *inputChunk, workers)
	ordered := make(chan *inputChunk, 2*workers)
	budget := newBudget(inFlightBytes)
	var wg sync.WaitGroup
	wg.Add(1 + workers)
	go func() {
		defer wg.Done()
		defer close(work)
		defer close(ordered)
		r := reader{cfg: cfg, ctx: ctx, budget: budget, work: work, ordered: ordered}
		r.run(files)
	}()
	for range workers {
		go func() {
			defer wg.Done()
			w := tokenizer{cfg: cfg, width: width, enc: enc}
			for b := range work {
				if ctx.Err() == nil { // once stopping, only release the chunks
					for i := range b.docs {
						w.process(&b.docs[i])
					}
				}
				close(b.done)
			}
		}()
	}
	// Stop the reader and workers on every way out, before the writer.
	defer wg.Wait()
	defer budget.close()
	defer cancel()

	sw := newShardWriter(tmp, Header{Version: headerVersion(masked), LossMask: masked, TokenWidth: width, Tokenizer: cfg.Tokenizer.Name(),
		Vocab: cfg.Tokenizer.Vocab(), SeqLen: cfg.SeqLen}, workers)
	defer sw.stop()
	tokensPerShard := cfg.ShardBytes / int64(width)
	if masked { // each token also takes a bit of mask
		tokensPerShard = (cfg.ShardBytes - 1) * 8 / int64(8*width+1)
	}
	seqsPerShard := max(1, (tokensPerShard-1)/int64(cfg.SeqLen))
	packers := map[Split]*packer{}
	for _, s := range []Split{Train, Heldout} {
		packers[s] = &packer{split: s, width: width, seqLen: cfg.SeqLen, masked: masked,
			full: int((seqsPerShard*int64(cfg.SeqLen) + 1) * int64(width)), emit: sw.submit}
	}

	res := &Result{}
	src := SourceStats{Format: cfg.Format, Files: int64(len(files)), Skipped: map[Reason]int64{}}
	switch {
	case cfg.Format == FormatJSONL:
		src.Field = cfg.Field
	case masked:
		src.ChatTemplate = cfg.ChatTemplate.Name
	}
	prog := Progress{FilesTotal: int64(len(files))}
	for _, f := range files {
		prog.BytesTotal += f.size
	}
	record := func(is Issue) error {
		src.Skipped[is.Reason]++
		if len(res.Issues) < MaxIssues {
			res.Issues = append(res.Issues, is)
		}
		if is.Reason.Bad() && !cfg.SkipBad {
			return fmt.Errorf("%w: %s", ErrBadInput, is)
		}
		return nil
	}
	for _, is := range walkIssues {
		if err := record(is); err != nil {
			return nil, err
		}
	}
	for b := range ordered {
		select {
		case <-b.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		for i := range b.docs {
			u := &b.docs[i]
			switch {
			case u.err != nil:
				return nil, u.err
			case u.issue != nil:
				if err := record(*u.issue); err != nil {
					return nil, err
				}
			default:
				src.Documents++
				if u.cut != "" {
					src.countCut(cfg, u)
				}
				src.TextBytes += u.text
				src.Tokens += int64(len(u.tokens) / width)
				for _, f := range u.trained {
					src.Trained += int64(f)
				}
				split := Train
				if u.heldout {
					split = Heldout
				}
				if err := packers[split].add(u.tokens, u.trained); err != nil {
					return nil, err
				}
			}
			*u = document{} // let the memory go
		}
		budget.release(b.cost)
		prog.Files, prog.Bytes, prog.Documents, prog.Tokens = b.files, b.bytes, src.Documents, src.Tokens
		src.Bytes = b.read
		if cfg.Progress != nil {
			cfg.Progress(prog)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if src.Documents == 0 {
		return nil, fmt.Errorf("%w in %s: %d files, none with text (skipped: %s)", ErrNoDocuments, strings.Join(cfg.Inputs, ", "), len(files), formatCounts(src.Skipped))
	}
	var dropped Totals
	for _, s := range []Split{Train, Heldout} {
		n, err := packers[s].finish()
		if err != nil {
			return nil, err
		}
		dropped.Of(s).Dropped = n
		src.TrainedCut += packers[s].cut
	}
	entries, err := sw.finish()
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: %d documents give %d tokens, and one sequence needs %d in one split", ErrTooSmall, src.Documents, src.Tokens, cfg.SeqLen+1)
	}
	if len(src.Skipped) == 0 {
		src.Skipped = nil
	}
	m := &Manifest{
		Name:          cfg.Name,
		FormatVersion: headerVersion(masked),
		LossMask:      masked,
		Tokenizer:     cfg.Tokenizer.Name(),
		Vocab:         cfg.Tokenizer.Vocab(),
		EOT:           cfg.Tokenizer.EOT(),
		SeqLen:        cfg.SeqLen,
		Holdout:       cfg.Holdout,
		Source:        src,
	}
	// Train shards first, each split in stream order.
	for _, s := range []Split{Train, Heldout} {
		t := m.Totals.Of(s)
		t.Dropped = dropped.Of(s).Dropped
		for _, e := range entries {
			if e.Split == s {
				m.Shards = append(m.Shards, e)
				t.Shards++
				t.Sequences += e.Sequences
				t.Tokens += e.Tokens
				t.Bytes += e.Bytes
			}
		}
	}
	m.ID = m.ComputeID()
	if err := WriteManifest(tmp, m); err != nil {
		return nil, err
	}
	res.Manifest = m
	return res, nil
}

// formatCounts writes counts by reason as "binary 2, empty 1".
func formatCounts(c map[Reason]int64) string {
	if len(c) == 0 {
		return "nothing"
	}
	keys := make([]Reason, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, c[k])
	}
	return strings.Join(parts, ", ")
}

// packer cuts one split's token stream into shards of whole sequences.
// The stream arrives as encoded tokens (width bytes each), with a loss
// mask flag per token when masked; buf (and flags) hold the shard being
// filled, whose first token repeats the previous shard's last.
type packer struct {
	split         Split
	width, seqLen int
	full          int  // token bytes of a full shard
	masked        bool // the payload carries the loss mask of flags
	buf           []byte
	flags         []byte // with masked: per token of buf, 1 if trained
	emitted       bool   // a shard has been emitted
	emit          func(s Split, payload []byte, sequences int64) error

	pos int64 // tokens of the stream so far
	cut int64 // trained tokens that are targets of a sequence without their record's start
}

// add appends a document's tokens (and, when masked, their flags) to the
// stream, emitting each shard as it fills.
func (p *packer) add(tokens, flags []byte) error {
	if p.buf == nil {
		p.buf, p.flags = p.newBuf()
	}
	p.countCut(flags)
	for len(tokens) > 0 {
		n := min(len(tokens), p.full-len(p.buf))
		p.buf = append(p.buf, tokens[:n]...)
		tokens = tokens[n:]
		if p.masked {
			p.flags = append(p.flags, flags[:n/p.width]...)
			flags = flags[n/p.width:]
		}
		if len(p.buf) == p.full {
			next, nextFlags := p.newBuf()
			next = append(next, p.buf[len(p.buf)-p.width:]...) // the shared token
			if p.masked {
				nextFlags = append(nextFlags, p.flags[len(p.flags)-1])
			}
			if err := p.emit(p.split, p.payload(p.full/p.width), int64(p.full/p.width-1)/int64(p.seqLen)); err != nil {
				return err
			}
			p.buf, p.flags, p.emitted = next, nextFlags, true
		}
	}
	return nil
}

// newBuf makes the buffers of a shard: room for its tokens and mask.
func (p *packer) newBuf() (buf, flags []byte) {
	if !p.masked {
		return make([]byte, 0, p.full), nil
	}
	ntok := p.full / p.width
	return make([]byte, 0, p.full+int(MaskBytes(int64(ntok)))), make([]byte, 0, ntok)
}

// payload returns the first ntok tokens of buf, followed by their loss
// mask when masked. It reuses buf's memory.
func (p *packer) payload(ntok int) []byte {
	b := p.buf[:ntok*p.width]
	if p.masked {
		b = appendMask(b, p.flags[:ntok])
	}
	return b
}

// countCut counts the trained tokens of a document starting at stream
// position p.pos that are targets of a sequence whose inputs start after
// it: stream token j is a target of sequence (j-1)/T, whose inputs start
// at token ((j-1)/T)·T.
func (p *packer) countCut(flags []byte) {
	T, start := int64(p.seqLen), p.pos
	for k, f := range flags {
		if j := start + int64(k); f == 1 && j >= 1 && (j-1)/T*T > start {
			p.cut++
		}
	}
	p.pos += int64(len(flags))
}

// finish emits the last, shorter shard (if the rest of the stream holds a
// whole sequence) and returns the number of tokens dropped after it.
func (p *packer) finish() (dropped int64, err error) {
	ntok := int64(len(p.buf) / p.width)
	if ntok == 0 {
		return 0, nil
	}
	T := int64(p.seqLen)
	n := (ntok - 1) / T
	if n == 0 {
		if p.emitted {
			return ntok - 1, nil // the first token is the last of the previous shard
		}
		return ntok, nil
	}
	used := n*T + 1
	if err := p.emit(p.split, p.payload(int(used)), n); err != nil {
		return 0, err
	}
	p.buf, p.flags = nil, nil
	return ntok - used, nil
}

// reader turns input files into chunks of documents, in order.
type reader struct {
	cfg     *Config
	ctx     context.Context
	budget  *budget
	work    chan<- *inputChunk
	ordered chan<- *inputChunk

	cur                *inputChunk
	files, bytes, read int64 // running totals, as in chunk
	line               []byte
}

func (r *reader) run(files []inputFile) {
	r.cur = &inputChunk{done: make(chan struct{})}
	for _, f := range files {
		if r.ctx.Err() != nil {
			return
		}
		var ok bool
		if r.cfg.Format.jsonLines() {
			ok = r.jsonlFile(f)
		} else {
			ok = r.textFile(f)
		}
		if !ok {
			return
		}
		r.files++
	}
	r.flush(true)
}

// add puts u in the current chunk, sending the chunk once it holds
// chunkBytes. It returns false when Prepare is stopping.
func (r *reader) add(u document) bool {
	r.cur.docs = append(r.cur.docs, u)
	r.cur.cost += int64(len(u.raw))
	if r.cur.cost >= chunkBytes {
		return r.flush(false)
	}
	return true
}

// flush sends the current chunk to the workers and the packer; the last
// one is sent even when empty, to carry the final totals.
func (r *reader) flush(last bool) bool {
	b := r.cur
	if len(b.docs) == 0 && !last {
		return true
	}
	b.files, b.bytes, b.read = r.files, r.bytes, r.read
	r.cur = &inputChunk{done: make(chan struct{})}
	if !r.budget.acquire(b.cost) {
		return false
	}
	select {
	case r.ordered <- b:
	case <-r.ctx.Done():
		return false
	}
	select {
	case r.work <- b:
	case <-r.ctx.Done():
		return false
	}
	return true
}

// textFile reads a file as one document. It reads the first
// BinarySniffBytes first, so that a large binary file is skipped without
// being read.
func (r *reader) textFile(f inputFile) bool {
	tooLarge := func(size int64) bool {
		return r.add(document{issue: &Issue{Path: f.path, Reason: ReasonTooLarge,
			Detail: fmt.Sprintf("%d bytes, more than the %d a text document may have", size, r.cfg.MaxDocumentBytes)}})
	}
	if f.size > r.cfg.MaxDocumentBytes {
		r.bytes += f.size
		return tooLarge(f.size)
	}
	file, _, err := safefile.Open(f.path, math.MaxInt64) // the size is checked as it is read
	if err != nil {
		return r.add(document{err: fmt.Errorf("shard: input %w", err)})
	}
	defer file.Close()
	data := make([]byte, f.size+1) // +1: to notice a file that grew since it was listed
	n, err := io.ReadFull(file, data[:min(f.size, BinarySniffBytes)])
	if isBinary(data[:n]) {
		r.bytes += f.size
		return r.add(document{issue: &Issue{Path: f.path, Reason: ReasonBinary, Detail: "a NUL byte in the first 8 KiB"}})
	}
	if err == nil { // the rest
		var m int
		m, err = io.ReadFull(file, data[n:])
		n += m
		if err == nil { // it grew: read on, up to one byte over the limit
			var rest []byte
			rest, err = io.ReadAll(io.LimitReader(file, r.cfg.MaxDocumentBytes-int64(n)+1))
			data = append(data[:n], rest...)
			n = len(data)
		}
	}
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return r.add(document{err: fmt.Errorf("shard: input %w", err)})
	}
	data = data[:n]
	r.bytes += int64(n)
	r.read += int64(n)
	switch {
	case n == 0:
		return r.add(document{issue: &Issue{Path: f.path, Reason: ReasonEmpty}})
	case int64(n) > r.cfg.MaxDocumentBytes:
		return tooLarge(int64(n))
	}
	if r.cfg.Format == FormatText && r.cfg.CutAbove > 0 && int64(n) > r.cfg.CutAbove && utf8.Valid(data) {
		docs, method := CutDocuments(data, int(r.cfg.DocumentBytes))
		for i, d := range docs {
			if !r.add(document{path: f.path, raw: d, cut: method, firstCut: i == 0}) {
				return false
			}
		}
		return true
	}
	return r.add(document{path: f.path, raw: data})
}

// budget bounds the input bytes in flight between the reader and the
// packer. One chunk larger than the limit is let through alone.
type budget struct {
	mu     sync.Mutex
	cond   *sync.Cond
	used   int64
	limit  int64
	closed bool
}

func newBudget(limit int64) *budget {
	b := &budget{limit: limit}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// acquire waits until n bytes fit; false means the budget was closed.
func (b *budget) acquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed && b.used > 0 && b.used+n > b.limit {
		b.cond.Wait()
	}
	b.used += n
	return !b.closed
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}

func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Broadcast()
}

// tokenizer checks and tokenises documents.
type tokenizer struct {
	cfg     *Config
	width   int
	enc     *chat.Encoder // chat and prompt-completion records
	ids     []int32       // reused between documents
	trained []bool        // reused between documents
}

func (w *tokenizer) process(u *document) {
	if u.issue != nil || u.err != nil {
		return
	}
	if w.enc != nil {
		w.processChat(u)
		return
	}
	text := u.raw
	if w.cfg.Format == FormatJSONL {
		var is *Issue
		if text, is = recordText(u.raw, w.cfg.Field); is != nil {
			is.Path, is.Line = u.path, u.line
			u.issue = is
			return
		}
	} else if !utf8.Valid(text) {
		u.issue = &Issue{Path: u.path, Reason: ReasonInvalidUTF8, Detail: invalidUTF8Detail(text)}
		return
	}
	u.raw = nil
	u.text = int64(len(text))
	u.heldout = HeldOut(text, w.cfg.Holdout)
	w.ids = w.cfg.Tokenizer.Encode(w.ids[:0], text)
	w.ids = append(w.ids, w.cfg.Tokenizer.EOT())
	w.encode(u)
}

// processChat renders a chat or prompt-completion record with the chat
// template and tokenises it with its loss mask, followed by an untrained
// EOT. Its split is decided by the hash of its messages' JSON encoding,
// so that a prompt-completion record and the same conversation as a chat
// record land in the same split. A record whose prompt (the tokens before
// its first trained one) is longer than a sequence is left out
// (ReasonPromptTooLong): no sequence could show the model the whole
// prompt before the answer.
func (w *tokenizer) processChat(u *document) {
	msgs, is := recordMessages(u.raw, w.cfg.Format)
	if is != nil {
		is.Path, is.Line = u.path, u.line
		u.issue = is
		return
	}
	segs, err := w.cfg.ChatTemplate.Format(msgs)
	if err != nil { // recordMessages checked roles and the answer
		u.err = fmt.Errorf("shard: %s:%d: %w", u.path, u.line, err)
		return
	}
	w.ids, w.trained, err = w.enc.Encode(w.ids[:0], w.trained[:0], segs)
	if err != nil {
		u.err = fmt.Errorf("shard: %s:%d: %w", u.path, u.line, err)
		return
	}
	if prompt := slices.Index(w.trained, true); prompt > w.cfg.SeqLen {
		u.issue = &Issue{Path: u.path, Line: u.line, Reason: ReasonPromptTooLong,
			Detail: fmt.Sprintf("%d tokens before the first answer, more than a sequence of %d", prompt, w.cfg.SeqLen)}
		return
	}
	w.ids = append(w.ids, w.cfg.Tokenizer.EOT())
	w.trained = append(w.trained, false)
	canon, _ := json.Marshal(msgs) // cannot fail: strings only
	u.raw = nil
	for _, m := range msgs {
		u.text += int64(len(m.Content))
	}
	u.heldout = HeldOut(canon, w.cfg.Holdout)
	u.trained = make([]byte, len(w.trained))
	for i, t := range w.trained {
		if t {
			u.trained[i] = 1
		}
	}
	w.encode(u)
	if cap(w.trained) > 1<<24 {
		w.trained = nil
	}
}

// encode sets u.tokens to w.ids encoded for the shard.
func (w *tokenizer) encode(u *document) {
	out := make([]byte, 0, len(w.ids)*w.width)
	for _, id := range w.ids {
		out = appendToken(out, w.width, id)
	}
	u.tokens = out
	if cap(w.ids) > 1<<24 {
		w.ids = nil // do not keep a giant document's buffer
	}
}

// invalidUTF8Detail says where text stops being UTF-8.
func invalidUTF8Detail(text []byte) string {
	i := 0
	for i < len(text) {
		r, n := utf8.DecodeRune(text[i:])
		if r == utf8.RuneError && n <= 1 {
			break
		}
		i += n
	}
	line := 1 + strings.Count(string(text[:i]), "\n")
	return fmt.Sprintf("invalid UTF-8 at byte %d (line %d)", i, line)
}

// shardWriter compresses and writes shards, several at a time (each zstd
// compression uses one core), while packing goes on. Entries keep the
// order of submission; the order in which files reach the disk does not
// matter, as their names are their hashes.
type shardWriter struct {
	dir    string
	header Header
	sem    chan struct{} // one token per shard being written
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error        // the first error
	out    []ShardEntry // by submission
}

func newShardWriter(dir string, h Header, parallel int) *shardWriter {
	return &shardWriter{dir: dir, header: h, sem: make(chan struct{}, max(1, parallel))}
}

// submit starts writing a shard of the payload, holding sequences
// sequences (it takes the payload over),
// waiting while as many as allowed are in flight. It returns the first
// error of any shard written so far. It is called from one goroutine.
func (w *shardWriter) submit(s Split, payload []byte, sequences int64) error {
	w.sem <- struct{}{}
	w.mu.Lock()
	err, i := w.err, len(w.out)
	w.out = append(w.out, ShardEntry{})
	w.mu.Unlock()
	if err != nil {
		<-w.sem
		return err
	}
	w.wg.Go(func() {
		defer func() { <-w.sem }()
		e, err := w.write(s, payload, sequences)
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil && w.err == nil {
			w.err = err
		}
		w.out[i] = e
	})
	return nil
}

// write compresses one shard and writes it as dir/<hash>.shard.
func (w *shardWriter) write(s Split, payload []byte, sequences int64) (ShardEntry, error) {
	h := w.header
	h.Sequences = sequences
	file, hash, err := encodeShard(nil, h, payload)
	if err != nil {
		return ShardEntry{}, err
	}
	path := ShardPath(w.dir, hash)
	if err := atomicfile.WriteBytes(path, file, 0o644); err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		return ShardEntry{}, fmt.Errorf("shard: writing %s: %w", path, err)
	}
	return ShardEntry{Hash: hash, Split: s, Sequences: h.Sequences, Tokens: h.Tokens(), Bytes: int64(len(file))}, nil
}

// finish waits for every shard and returns their entries in submission
// order, or the first error.
func (w *shardWriter) finish() ([]ShardEntry, error) {
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out, w.err
}

// stop waits for the shards in flight (their files are removed with the
// temporary directory).
func (w *shardWriter) stop() { w.wg.Wait() }
