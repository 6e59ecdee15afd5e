package shard

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/braidml/braid/internal/safefile"
)

// Format constants; the byte layout is in the package comment.
const (
	// FormatVersion is the version of the shard file and manifest format
	// of a dataset without a loss mask.
	FormatVersion = 1
	// FormatVersionMasked is the version of a dataset whose shards carry a
	// loss mask (the same layout, with the mask after the tokens). This
	// package reads and writes both.
	FormatVersionMasked = 2
	// ShardExt ends every shard file name; the rest is the file's SHA-256.
	ShardExt = ".shard"
	// MaxSeqLen bounds the sequence length a header may declare.
	MaxSeqLen = 1 << 20
	// MaxPayloadBytes bounds a shard's uncompressed token payload, so that a
	// corrupt or hostile header cannot make a reader allocate without limit.
	MaxPayloadBytes = 1 << 30
	// MaxTokenizerName bounds the tokenizer name in a header.
	MaxTokenizerName = 32

	shardMagic      = "BRDSHARD"
	fixedHeaderSize = 40 // bytes before the tokenizer name
)

// Errors. Each is wrapped with the file at fault and what is wrong with it.
var (
	// ErrBadHeader: a shard file's header does not decode (wrong magic or
	// version, a field out of range, a bad header checksum).
	ErrBadHeader = errors.New("shard: bad header")
	// ErrTruncated: a file is shorter than its header or manifest says.
	ErrTruncated = errors.New("shard: truncated")
	// ErrHashMismatch: a shard file's SHA-256 is not the hash it is named by.
	ErrHashMismatch = errors.New("shard: hash mismatch")
	// ErrBadPayload: the payload does not decompress, has the wrong length,
	// fails its checksum, or holds a token outside the vocabulary.
	ErrBadPayload = errors.New("shard: bad payload")
	// ErrMissing: a shard the manifest lists is not in the directory.
	ErrMissing = errors.New("shard: missing")
	// ErrMismatch: a shard's header disagrees with the manifest.
	ErrMismatch = errors.New("shard: header disagrees with manifest")
)

// Header is the decoded header of a shard file.
type Header struct {
	Version    int    // FormatVersion, or FormatVersionMasked with LossMask
	LossMask   bool   // the payload holds a loss mask after the tokens (version 2)
	TokenWidth int    // bytes per stored token: 2 or 4
	Tokenizer  string // the tokenizer's Name
	Vocab      int    // every token id is < Vocab
	SeqLen     int    // T, tokens per sequence (inputs)
	Sequences  int64  // N ≥ 1
	// CompressedBytes is the length of the zstd payload that follows the
	// header; PayloadCRC is the CRC-32C of the payload once decompressed.
	CompressedBytes int64
	PayloadCRC      uint32
}

// Size is the encoded length of the header in bytes.
func (h Header) Size() int { return fixedHeaderSize + len(h.Tokenizer) + 4 }

// Tokens is the number of tokens the shard stores: N·T+1.
func (h Header) Tokens() int64 { return h.Sequences*int64(h.SeqLen) + 1 }

// PayloadBytes is the length of the uncompressed payload: the tokens, and
// the loss mask if there is one.
func (h Header) PayloadBytes() int64 {
	n := h.Tokens() * int64(h.TokenWidth)
	if h.LossMask {
		n += MaskBytes(h.Tokens())
	}
	return n
}

// MaskBytes is the length of the loss mask of n tokens: one bit each.
func MaskBytes(n int64) int64 { return (n + 7) / 8 }

// headerVersion is the format version of a header with or without a mask.
func headerVersion(mask bool) int {
	if mask {
		return FormatVersionMasked
	}
	return FormatVersion
}

// FileBytes is the length of the whole shard file.
func (h Header) FileBytes() int64 { return int64(h.Size()) + h.CompressedBytes }

// TokenWidth is the bytes each token takes in a shard of a vocabulary of
// vocab ids: 2 up to 65536 ids, otherwise 4.
func TokenWidth(vocab int) int {
	if vocab <= 1<<16 {
		return 2
	}
	return 4
}

// validate checks every field against the format's bounds.
func (h Header) validate() error {
	switch {
	case h.Version != headerVersion(h.LossMask):
		return fmt.Errorf("version %d with loss mask %v, want version %d", h.Version, h.LossMask, headerVersion(h.LossMask))
	case !validTokenizerName(h.Tokenizer):
		return fmt.Errorf("tokenizer name %q: want 1..%d of [a-zA-Z0-9_.-]", h.Tokenizer, MaxTokenizerName)
	case h.Vocab < 1 || int64(h.Vocab) > 1<<32-1:
		return fmt.Errorf("vocab %d out of range", h.Vocab)
	case h.TokenWidth != TokenWidth(h.Vocab):
		return fmt.Errorf("token width %d, a vocab of %d needs %d", h.TokenWidth, h.Vocab, TokenWidth(h.Vocab))
	case h.SeqLen < 1 || h.SeqLen > MaxSeqLen:
		return fmt.Errorf("sequence length %d, want 1..%d", h.SeqLen, MaxSeqLen)
	case h.Sequences < 1 || h.Sequences > MaxPayloadBytes:
		return fmt.Errorf("sequence count %d out of range", h.Sequences)
	case h.PayloadBytes() > MaxPayloadBytes:
		return fmt.Errorf("payload of %d bytes, more than the %d allowed", h.PayloadBytes(), MaxPayloadBytes)
	case h.CompressedBytes < 0 || h.CompressedBytes > 2*MaxPayloadBytes:
		return fmt.Errorf("compressed payload length %d out of range", h.CompressedBytes)
	}
	return nil
}

func validTokenizerName(s string) bool {
	if len(s) < 1 || len(s) > MaxTokenizerName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// AppendHeader appends the encoding of h to b. It fails only when a field
// is out of the format's bounds.
func AppendHeader(b []byte, h Header) ([]byte, error) {
	if err := h.validate(); err != nil {
		return b, fmt.Errorf("%w: %v", ErrBadHeader, err)
	}
	start := len(b)
	b = append(b, shardMagic...)
	b = binary.LittleEndian.AppendUint16(b, uint16(h.Version))
	b = append(b, byte(h.TokenWidth), byte(len(h.Tokenizer)))
	b = binary.LittleEndian.AppendUint32(b, uint32(h.Vocab))
	b = binary.LittleEndian.AppendUint32(b, uint32(h.SeqLen))
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Sequences))
	b = binary.LittleEndian.AppendUint64(b, uint64(h.CompressedBytes))
	b = binary.LittleEndian.AppendUint32(b, h.PayloadCRC)
	b = append(b, h.Tokenizer...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli)), nil
}

// DecodeHeader decodes the header at the start of b (b may hold the rest of
// the file too). A b shorter than the header is ErrTruncated; anything else
// wrong is ErrBadHeader saying what. It never panics.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < fixedHeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes, a header has at least %d", ErrTruncated, len(b), fixedHeaderSize+5)
	}
	if string(b[:8]) != shardMagic {
		return Header{}, fmt.Errorf("%w: magic %q, want %q", ErrBadHeader, b[:8], shardMagic)
	}
	h := Header{
		Version:    int(binary.LittleEndian.Uint16(b[8:])),
		TokenWidth: int(b[10]),
		Vocab:      int(binary.LittleEndian.Uint32(b[12:])),
		SeqLen:     int(binary.LittleEndian.Uint32(b[16:])),
		PayloadCRC: binary.LittleEndian.Uint32(b[36:]),
	}
	if h.Version != FormatVersion && h.Version != FormatVersionMasked {
		return Header{}, fmt.Errorf("%w: version %d, this build reads %d and %d", ErrBadHeader, h.Version, FormatVersion, FormatVersionMasked)
	}
	h.LossMask = h.Version == FormatVersionMasked
	seqs, comp := binary.LittleEndian.Uint64(b[20:]), binary.LittleEndian.Uint64(b[28:])
	if seqs > MaxPayloadBytes || comp > 2*MaxPayloadBytes {
		return Header{}, fmt.Errorf("%w: sequence count %d or compressed length %d out of range", ErrBadHeader, seqs, comp)
	}
	h.Sequences, h.CompressedBytes = int64(seqs), int64(comp)
	n := int(b[11])
	if n < 1 || n > MaxTokenizerName {
		return Header{}, fmt.Errorf("%w: tokenizer name of %d bytes, want 1..%d", ErrBadHeader, n, MaxTokenizerName)
	}
	if len(b) < fixedHeaderSize+n+4 {
		return Header{}, fmt.Errorf("%w: %d bytes, the header has %d", ErrTruncated, len(b), fixedHeaderSize+n+4)
	}
	h.Tokenizer = string(b[fixedHeaderSize : fixedHeaderSize+n])
	want := binary.LittleEndian.Uint32(b[fixedHeaderSize+n:])
	if got := crc32.Checksum(b[:fixedHeaderSize+n], castagnoli); got != want {
		return Header{}, fmt.Errorf("%w: header checksum %08x, header says %08x", ErrBadHeader, got, want)
	}
	if err := h.validate(); err != nil {
		return Header{}, fmt.Errorf("%w: %v", ErrBadHeader, err)
	}
	return h, nil
}

// zstd coders. One encoder and one decoder serve the whole process: their
// EncodeAll and DecodeAll are safe for concurrent use. The encoder is
// configured once so that the same payload always compresses to the same
// bytes (shard names depend on them).
var (
	encoderOnce sync.Once
	encoder     *zstd.Encoder
	decoderOnce sync.Once
	decoder     *zstd.Decoder
)

func zstdEncoder() *zstd.Encoder {
	encoderOnce.Do(func() {
		var err error
		encoder, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err != nil {
			panic("shard: zstd encoder: " + err.Error()) // only on bad options
		}
	})
	return encoder
}

func zstdDecoder() *zstd.Decoder {
	decoderOnce.Do(func() {
		var err error
		decoder, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(MaxPayloadBytes), zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic("shard: zstd decoder: " + err.Error())
		}
	})
	return decoder
}

// encodeShard builds a shard file from a payload of little-endian tokens
// (h.TokenWidth bytes each), followed by their loss mask if h.LossMask, and
// returns it with its hex SHA-256. h's compressed length and checksum are
// filled in here; the payload must hold h.Tokens() tokens. dst is reused
// for the file when large enough.
func encodeShard(dst []byte, h Header, payload []byte) ([]byte, string, error) {
	if int64(len(payload)) != h.PayloadBytes() {
		return nil, "", fmt.Errorf("shard: payload of %d bytes for %d sequences of %d tokens (loss mask %v)", len(payload), h.Sequences, h.SeqLen, h.LossMask)
	}
	h.PayloadCRC = crc32.Checksum(payload, castagnoli)
	// Compress after a placeholder header, then write the real header (its
	// length does not depend on the compressed length).
	hsize := h.Size()
	dst = append(dst[:0], make([]byte, hsize)...)
	dst = zstdEncoder().EncodeAll(payload, dst)
	h.CompressedBytes = int64(len(dst) - hsize)
	head, err := AppendHeader(make([]byte, 0, hsize), h)
	if err != nil {
		return nil, "", err
	}
	copy(dst, head)
	sum := sha256.Sum256(dst)
	return dst, hex.EncodeToString(sum[:]), nil
}

// EncodeShard builds the shard file holding tokens, which must be the
// N·seqLen+1 tokens of N ≥ 1 sequences, each id in [0, vocab). It returns
// the file and its name's hash. The result depends only on the arguments.
func EncodeShard(tokenizer string, vocab, seqLen int, tokens []int32) (file []byte, hash string, err error) {
	return EncodeMaskedShard(tokenizer, vocab, seqLen, tokens, nil)
}

// EncodeMaskedShard is EncodeShard for a shard with a loss mask: trained[i]
// says whether the loss counts on token i as a target. trained must have
// one flag per token; nil makes a shard without a mask (EncodeShard).
func EncodeMaskedShard(tokenizer string, vocab, seqLen int, tokens []int32, trained []bool) (file []byte, hash string, err error) {
	if seqLen < 1 || len(tokens) < seqLen+1 || (len(tokens)-1)%seqLen != 0 {
		return nil, "", fmt.Errorf("shard: %d tokens are not N·%d+1 for any N ≥ 1", len(tokens), seqLen)
	}
	if trained != nil && len(trained) != len(tokens) {
		return nil, "", fmt.Errorf("shard: %d loss mask flags for %d tokens", len(trained), len(tokens))
	}
	mask := trained != nil
	h := Header{Version: headerVersion(mask), LossMask: mask, TokenWidth: TokenWidth(vocab), Tokenizer: tokenizer, Vocab: vocab,
		SeqLen: seqLen, Sequences: int64((len(tokens) - 1) / seqLen)}
	if err := h.validate(); err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrBadHeader, err)
	}
	payload := make([]byte, 0, h.PayloadBytes())
	for i, t := range tokens {
		if t < 0 || int(t) >= vocab {
			return nil, "", fmt.Errorf("shard: token %d at %d is outside the vocabulary of %d", t, i, vocab)
		}
		payload = appendToken(payload, h.TokenWidth, t)
	}
	if mask {
		flags := make([]byte, len(trained))
		for i, t := range trained {
			if t {
				flags[i] = 1
			}
		}
		payload = appendMask(payload, flags)
	}
	return encodeShard(nil, h, payload)
}

// appendMask appends the loss mask of flags (one byte per token, 0 or 1)
// to b: bit i%8 of byte i/8 is token i's flag, the unused high bits of the
// last byte zero.
func appendMask(b, flags []byte) []byte {
	for i := 0; i < len(flags); i += 8 {
		var m byte
		for j, f := range flags[i:min(i+8, len(flags))] {
			m |= (f & 1) << j
		}
		b = append(b, m)
	}
	return b
}

func appendToken(b []byte, width int, t int32) []byte {
	if width == 2 {
		return binary.LittleEndian.AppendUint16(b, uint16(t))
	}
	return binary.LittleEndian.AppendUint32(b, uint32(t))
}

// Shard is a decoded, verified shard: its header, tokens and loss mask.
// It is read-only and safe for concurrent use.
type Shard struct {
	Hash   string // hex SHA-256 of the file
	Header Header
	// payload holds the Header.Tokens() tokens, Header.TokenWidth bytes
	// each, little-endian; mask their loss mask, nil without one (the
	// file's decompressed payload, cut in two).
	payload, mask []byte
}

// NumTokens is the number of tokens the shard stores: N·T+1.
func (s *Shard) NumTokens() int { return len(s.payload) / s.Header.TokenWidth }

// Trained reports whether the loss counts on token i (0 ≤ i < NumTokens())
// as a target: its loss mask bit, and true in a shard without a mask.
func (s *Shard) Trained(i int) bool {
	if s.mask == nil {
		return true
	}
	return s.mask[i/8]>>(i%8)&1 == 1
}

// SequenceMask appends the T+1 flags of the shard's sequence i to dst and
// returns it, aligned with Sequence: flag j is Trained of token j of the
// sequence. The targets of the sequence are its tokens 1..T, so flag 0 is
// not about it (it belongs to the sequence before).
func (s *Shard) SequenceMask(i int64, dst []bool) []bool {
	if i < 0 || i >= s.Header.Sequences {
		panic(fmt.Sprintf("shard: sequence %d of a shard with %d", i, s.Header.Sequences))
	}
	T := int64(s.Header.SeqLen)
	for j := i * T; j <= i*T+T; j++ {
		dst = append(dst, s.Trained(int(j)))
	}
	return dst
}

// Token returns token i, 0 ≤ i < NumTokens().
func (s *Shard) Token(i int) int32 {
	if s.Header.TokenWidth == 2 {
		return int32(binary.LittleEndian.Uint16(s.payload[2*i:]))
	}
	return int32(binary.LittleEndian.Uint32(s.payload[4*i:]))
}

// AppendTokens appends all the shard's tokens to dst and returns it.
func (s *Shard) AppendTokens(dst []int32) []int32 {
	for i := range s.NumTokens() {
		dst = append(dst, s.Token(i))
	}
	return dst
}

// Sequence appends the T+1 tokens of the shard's sequence i (0 ≤ i <
// Header.Sequences) to dst and returns it: inputs are the first T, targets
// the last T.
func (s *Shard) Sequence(i int64, dst []int32) []int32 {
	if i < 0 || i >= s.Header.Sequences {
		panic(fmt.Sprintf("shard: sequence %d of a shard with %d", i, s.Header.Sequences))
	}
	T := int64(s.Header.SeqLen)
	for j := i * T; j <= i*T+T; j++ {
		dst = append(dst, s.Token(int(j)))
	}
	return dst
}

// DecodeShard decodes and checks a whole shard file: header, length,
// payload checksum and token range. It does not check the file's hash
// (ReadShard does, against the file name). It never panics; errors wrap
// ErrTruncated, ErrBadHeader or ErrBadPayload.
func DecodeShard(file []byte) (*Shard, error) {
	h, err := DecodeHeader(file)
	if err != nil {
		return nil, err
	}
	switch want := h.FileBytes(); {
	case int64(len(file)) < want:
		return nil, fmt.Errorf("%w: %d bytes, the header says %d", ErrTruncated, len(file), want)
	case int64(len(file)) > want:
		return nil, fmt.Errorf("%w: %d bytes after the end of the payload", ErrBadHeader, int64(len(file))-want)
	}
	// The decoder stops at the capacity of its destination (it is built
	// with WithDecodeAllCapLimit), so a payload that decompresses to more
	// than the header says fails instead of growing without bound.
	payload, err := zstdDecoder().DecodeAll(file[h.Size():], make([]byte, 0, h.PayloadBytes()))
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %v", ErrBadPayload, err)
	}
	if int64(len(payload)) != h.PayloadBytes() {
		return nil, fmt.Errorf("%w: %d bytes decompressed, the header says %d", ErrBadPayload, len(payload), h.PayloadBytes())
	}
	if got := crc32.Checksum(payload, castagnoli); got != h.PayloadCRC {
		return nil, fmt.Errorf("%w: checksum %08x, the header says %08x", ErrBadPayload, got, h.PayloadCRC)
	}
	s := &Shard{Header: h, payload: payload[:h.Tokens()*int64(h.TokenWidth)]}
	if h.LossMask {
		s.mask = payload[len(s.payload):]
		if pad := s.mask[len(s.mask)-1] >> (8 - (8*len(s.mask) - s.NumTokens())); pad != 0 {
			return nil, fmt.Errorf("%w: loss mask bits set after the last token", ErrBadPayload)
		}
	}
	for i := range s.NumTokens() {
		if t := s.Token(i); int(t) >= h.Vocab {
			return nil, fmt.Errorf("%w: token %d at %d is outside the vocabulary of %d", ErrBadPayload, t, i, h.Vocab)
		}
	}
	sum := sha256.Sum256(file)
	s.Hash = hex.EncodeToString(sum[:])
	return s, nil
}

// ShardPath is where a dataset directory keeps the shard of a hash.
func ShardPath(dir, hash string) string { return filepath.Join(dir, hash+ShardExt) }

// ReadShard reads the shard file at path, which must be named by its hash
// (<sha256 hex>.shard), and verifies everything: header, length, hash,
// payload checksum. Errors name the file and what is wrong with it.
func ReadShard(path string) (*Shard, error) {
	want, ok := strings.CutSuffix(filepath.Base(path), ShardExt)
	if !ok || !validHash(want) {
		return nil, fmt.Errorf("shard: %s: the name is not <sha256 hex>%s", path, ShardExt)
	}
	return readShard(path, want)
}

// MaxFileBytes bounds a shard file (Manifest.Validate allows no larger).
const MaxFileBytes = 3 * MaxPayloadBytes

// readFile reads a shard file: opened once, and refused unless it is a
// regular file (not a symbolic link: a dataset directory holds none) of at
// most MaxFileBytes (internal/safefile).
func readFile(path string) ([]byte, error) {
	return safefile.ReadFileNoFollow(path, MaxFileBytes)
}

// readShard reads and verifies the shard file at path against hash.
func readShard(path, hash string) (*Shard, error) {
	file, err := readFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, ErrMissing)
	}
	if err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	return checkShard(path, file, hash)
}

// checkShard decodes file, read from path, and verifies it against hash.
// Structural errors (truncation, header) come first because they say more
// than a hash mismatch, which they would also cause.
func checkShard(path string, file []byte, hash string) (*Shard, error) {
	h, err := DecodeHeader(file)
	if err == nil && int64(len(file)) < h.FileBytes() {
		err = fmt.Errorf("%w: %d bytes, the header says %d", ErrTruncated, len(file), h.FileBytes())
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sum := sha256.Sum256(file)
	if got := hex.EncodeToString(sum[:]); got != hash {
		return nil, fmt.Errorf("%s: %w: the file's SHA-256 is %s", path, ErrHashMismatch, got)
	}
	s, err := DecodeShard(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// VerifyEntry checks file, the bytes of the shard that entry e of manifest
// m names, as Verify checks a shard file: its SHA-256 is e.Hash, its
// header, length and payload checksum are good, and the header agrees with
// the manifest. name labels the errors (a path, or an object in a store).
func VerifyEntry(m *Manifest, e ShardEntry, file []byte, name string) error {
	s, err := checkShard(name, file, e.Hash)
	if err != nil {
		return err
	}
	if err := checkAgainstManifest(m, e, s.Header); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// validHash reports whether s is a hex SHA-256 as this package writes it:
// 64 lowercase hex digits.
func validHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isBinary reports whether the start of a file looks binary: a NUL byte in
// its first BinarySniffBytes.
func isBinary(head []byte) bool {
	return bytes.IndexByte(head[:min(len(head), BinarySniffBytes)], 0) >= 0
}

// BinarySniffBytes is how much of a file Prepare searches for a NUL byte to
// decide that it is binary.
const BinarySniffBytes = 8 << 10
