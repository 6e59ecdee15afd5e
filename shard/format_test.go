package shard_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/shard"
)

// randomTokens returns the n·T+1 tokens of n sequences, ids below vocab.
func randomTokens(rng *rand.Rand, n, T, vocab int) []int32 {
	toks := make([]int32, n*T+1)
	for i := range toks {
		toks[i] = int32(rng.IntN(vocab))
	}
	return toks
}

// writeShard encodes tokens and writes them as dir/<hash>.shard.
func writeShard(t *testing.T, dir, tokenizer string, vocab, T int, toks []int32) (path string, file []byte) {
	t.Helper()
	file, hash, err := shard.EncodeShard(tokenizer, vocab, T, toks)
	if err != nil {
		t.Fatal(err)
	}
	path = shard.ShardPath(dir, hash)
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, file
}

// TestShardRoundTrip: tokens come back as written, for 2- and 4-byte
// tokens, through ReadShard and by sequence.
func TestShardRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		tokenizer string
		vocab     int
		width     int
	}{{"byte", 257, 2}, {"gpt2", 50257, 2}, {"big", 1 << 16, 2}, {"bigger", 1<<16 + 1, 4}} {
		T, n := 16, 9
		toks := randomTokens(rng, n, T, tc.vocab)
		toks[0] = int32(tc.vocab - 1) // the largest id survives
		path, file := writeShard(t, t.TempDir(), tc.tokenizer, tc.vocab, T, toks)
		s, err := shard.ReadShard(path)
		if err != nil {
			t.Fatalf("%s: %v", tc.tokenizer, err)
		}
		h := s.Header
		if h.Tokenizer != tc.tokenizer || h.Vocab != tc.vocab || h.TokenWidth != tc.width || h.SeqLen != T || h.Sequences != int64(n) || h.FileBytes() != int64(len(file)) {
			t.Errorf("%s: header %+v", tc.tokenizer, h)
		}
		if got := s.AppendTokens(nil); !slices.Equal(got, toks) {
			t.Errorf("%s: tokens differ", tc.tokenizer)
		}
		for i := range int64(n) {
			if got, want := s.Sequence(i, nil), toks[int(i)*T:int(i)*T+T+1]; !slices.Equal(got, want) {
				t.Errorf("%s: sequence %d: %v, want %v", tc.tokenizer, i, got, want)
			}
		}
		if filepath.Base(path) != s.Hash+shard.ShardExt {
			t.Errorf("hash %s, file %s", s.Hash, path)
		}
	}
	if _, _, err := shard.EncodeShard("byte", 257, 4, []int32{1, 2, 3}); err == nil {
		t.Error("3 tokens for sequences of 4: no error")
	}
	if _, _, err := shard.EncodeShard("byte", 257, 2, []int32{1, 2, 300}); err == nil {
		t.Error("token 300 in a vocab of 257: no error")
	}
}

// TestShardLayout reads a shard file byte by byte as the package comment
// describes it, so that the documentation and the code cannot drift apart.
func TestShardLayout(t *testing.T) {
	toks := []int32{256, 1, 2, 3, 4, 5, 6}
	file, _, err := shard.EncodeShard("byte", 257, 3, toks)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	n := int(file[11])
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	checks := []struct {
		field     string
		got, want any
	}{
		{"magic", string(file[:8]), "BRDSHARD"},
		{"version", le.Uint16(file[8:]), uint16(1)},
		{"token width", file[10], byte(2)},
		{"name length", n, 4},
		{"vocab", le.Uint32(file[12:]), uint32(257)},
		{"seq_len", le.Uint32(file[16:]), uint32(3)},
		{"sequences", le.Uint64(file[20:]), uint64(2)},
		{"compressed length", le.Uint64(file[28:]), uint64(len(file) - 44 - n)},
		{"tokenizer", string(file[40 : 40+n]), "byte"},
		{"header checksum", le.Uint32(file[40+n:]), crc32.Checksum(file[:40+n], castagnoli)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.field, c.got, c.want)
		}
	}
	payload := []byte{0, 1, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0} // 256, 1..6 as uint16 LE
	if got := le.Uint32(file[36:]); got != crc32.Checksum(payload, castagnoli) {
		t.Errorf("payload checksum %08x, want the CRC-32C of the little-endian tokens", got)
	}
}

// TestReadShardErrors: every way a shard file can be bad gives an error
// that names the file and wraps the right sentinel.
func TestReadShardErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	dir := t.TempDir()
	good, file := writeShard(t, dir, "byte", 257, 8, randomTokens(rng, 20, 8, 257))
	other, _ := writeShard(t, dir, "byte", 257, 8, randomTokens(rng, 20, 8, 257))
	h, err := shard.DecodeHeader(file)
	if err != nil {
		t.Fatal(err)
	}
	// rewrite re-encodes the header with change applied (its checksum
	// stays valid), and names the file by its new hash.
	rewrite := func(change func(*shard.Header)) []byte {
		h := h
		change(&h)
		head, err := shard.AppendHeader(nil, h)
		if err != nil {
			t.Fatal(err)
		}
		return append(head, file[h.Size():]...)
	}
	tests := []struct {
		name    string
		content []byte
		byHash  bool // name the file by its actual hash
		want    error
		detail  string
	}{
		{"wrong hash", slices.Clone(file), false, shard.ErrHashMismatch, "SHA-256"},
		{"truncated payload", file[:len(file)-10], false, shard.ErrTruncated, "the header says"},
		{"truncated header", file[:30], false, shard.ErrTruncated, "30 bytes"},
		{"empty", nil, false, shard.ErrTruncated, "0 bytes"},
		{"bad magic", append([]byte("NOTSHARD"), file[8:]...), false, shard.ErrBadHeader, "magic"},
		{"flipped header bit", flip(file, 13), false, shard.ErrBadHeader, "header checksum"},
		{"trailing bytes", append(slices.Clone(file), 0), true, shard.ErrBadHeader, "after the end"},
		{"bad payload checksum", rewrite(func(h *shard.Header) { h.PayloadCRC++ }), true, shard.ErrBadPayload, "checksum"},
		{"token outside vocab", rewrite(func(h *shard.Header) { h.Vocab = 100 }), true, shard.ErrBadPayload, "outside the vocabulary"},
		{"corrupt zstd", flip(file, len(file)-20), true, shard.ErrBadPayload, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), filepath.Base(other)) // named by another file's hash
			if tt.byHash {
				path = shard.ShardPath(t.TempDir(), sha256Hex(tt.content))
			}
			if err := os.WriteFile(path, tt.content, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := shard.ReadShard(path)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("ReadShard: %v, want %v naming %s and saying %q", err, tt.want, path, tt.detail)
			}
		})
	}
	if _, err := shard.ReadShard(good); err != nil {
		t.Errorf("the good file: %v", err)
	}
	if _, err := shard.ReadShard(filepath.Join(dir, "x.shard")); err == nil || !strings.Contains(err.Error(), "x.shard") {
		t.Errorf("a file not named by a hash: %v", err)
	}
	missing := shard.ShardPath(dir, strings.Repeat("ab", 32))
	if _, err := shard.ReadShard(missing); !errors.Is(err, shard.ErrMissing) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
}

// flip returns a copy of b with one bit of byte i flipped.
func flip(b []byte, i int) []byte {
	c := slices.Clone(b)
	c[i] ^= 0x10
	return c
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
