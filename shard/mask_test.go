package shard_test

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/braidml/braid/shard"
)

// randomFlags returns n loss-mask flags, about half of them set.
func randomFlags(rng *rand.Rand, n int) []bool {
	f := make([]bool, n)
	for i := range f {
		f[i] = rng.IntN(2) == 1
	}
	return f
}

// TestMaskedShardRoundTrip: a shard with a loss mask gives back its tokens
// and flags, by token and by sequence, for both token widths and for
// token counts that do and do not fill the mask's last byte; a shard
// without one reads as before, every token trained.
func TestMaskedShardRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		vocab, T, n int
	}{{263, 7, 1}, {263, 16, 9}, {1<<16 + 1, 5, 3}} { // 8, 145 and 16 tokens
		toks := randomTokens(rng, tc.n, tc.T, tc.vocab)
		flags := randomFlags(rng, len(toks))
		file, hash, err := shard.EncodeMaskedShard("byte-chat", tc.vocab, tc.T, toks, flags)
		if err != nil {
			t.Fatal(err)
		}
		path := shard.ShardPath(t.TempDir(), hash)
		os.WriteFile(path, file, 0o644)
		s, err := shard.ReadShard(path)
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		if h := s.Header; !h.LossMask || h.Version != shard.FormatVersionMasked {
			t.Errorf("%+v: header %+v, want version 2 with a loss mask", tc, h)
		}
		if got := s.AppendTokens(nil); !slices.Equal(got, toks) {
			t.Errorf("%+v: tokens differ", tc)
		}
		for i := range toks {
			if s.Trained(i) != flags[i] {
				t.Fatalf("%+v: token %d trained %v, want %v", tc, i, s.Trained(i), flags[i])
			}
		}
		for i := range int64(tc.n) {
			lo := int(i) * tc.T
			if got := s.SequenceMask(i, nil); !slices.Equal(got, flags[lo:lo+tc.T+1]) {
				t.Errorf("%+v: sequence %d: mask %v, want %v", tc, i, got, flags[lo:lo+tc.T+1])
			}
		}
	}
	file, _, err := shard.EncodeShard("byte", 257, 4, randomTokens(rng, 2, 4, 257))
	if err != nil {
		t.Fatal(err)
	}
	s, err := shard.DecodeShard(file)
	if err != nil || s.Header.LossMask || s.Header.Version != shard.FormatVersion {
		t.Fatalf("a shard without a mask: %+v, %v", s, err)
	}
	if m := s.SequenceMask(1, nil); len(m) != 5 || slices.Contains(m, false) {
		t.Errorf("without a mask every token is trained: %v", m)
	}
	if _, _, err := shard.EncodeMaskedShard("byte", 257, 4, make([]int32, 9), make([]bool, 8)); err == nil {
		t.Error("8 flags for 9 tokens: no error")
	}
}

// TestMaskedShardLayout: the mask follows the tokens in the payload, bit
// i%8 of byte i/8 for token i, and the version field says 2.
func TestMaskedShardLayout(t *testing.T) {
	toks := []int32{260, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	flags := []bool{false, false, true, true, false, false, false, false, true, true}
	file, _, err := shard.EncodeMaskedShard("byte-chat", 263, 3, toks, flags)
	if err != nil {
		t.Fatal(err)
	}
	if v := binary.LittleEndian.Uint16(file[8:]); v != 2 {
		t.Errorf("version field %d, want 2", v)
	}
	var payload []byte
	for _, tok := range toks {
		payload = binary.LittleEndian.AppendUint16(payload, uint16(tok))
	}
	payload = append(payload, 0b0000_1100, 0b0000_0011) // tokens 2, 3; 8, 9
	if got, want := binary.LittleEndian.Uint32(file[36:]), crc32.Checksum(payload, crc32.MakeTable(crc32.Castagnoli)); got != want {
		t.Errorf("payload checksum %08x, want %08x: the CRC-32C of the tokens then the mask bits", got, want)
	}
}

// maskedFile builds a version-2 shard file from a raw payload, so that
// tests can write masks the encoder never would.
func maskedFile(t *testing.T, T, n int, payload []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	comp := enc.EncodeAll(payload, nil)
	h := shard.Header{Version: shard.FormatVersionMasked, LossMask: true, TokenWidth: 2, Tokenizer: "byte-chat", Vocab: 263,
		SeqLen: T, Sequences: int64(n), CompressedBytes: int64(len(comp)), PayloadCRC: crc32.Checksum(payload, crc32.MakeTable(crc32.Castagnoli))}
	head, err := shard.AppendHeader(nil, h)
	if err != nil {
		t.Fatal(err)
	}
	return append(head, comp...)
}

// TestMaskedShardRefuses: a mask with bits set after the last token, a
// payload that lacks its mask, and a header whose version and mask flag
// disagree are refused.
func TestMaskedShardRefuses(t *testing.T) {
	tokens := make([]byte, 2*7) // 7 tokens: 2 sequences of 3, one mask byte
	if _, err := shard.DecodeShard(maskedFile(t, 3, 2, append(tokens, 0b0111_1111))); err != nil {
		t.Fatalf("a good mask: %v", err)
	}
	if _, err := shard.DecodeShard(maskedFile(t, 3, 2, append(tokens, 0b1000_0000))); !errors.Is(err, shard.ErrBadPayload) || !strings.Contains(err.Error(), "after the last token") {
		t.Errorf("a bit after the last token: %v", err)
	}
	if _, err := shard.DecodeShard(maskedFile(t, 3, 2, tokens)); !errors.Is(err, shard.ErrBadPayload) {
		t.Errorf("no mask: %v", err)
	}
	for _, h := range []shard.Header{
		{Version: shard.FormatVersionMasked, LossMask: false, TokenWidth: 2, Tokenizer: "b", Vocab: 263, SeqLen: 3, Sequences: 1},
		{Version: shard.FormatVersion, LossMask: true, TokenWidth: 2, Tokenizer: "b", Vocab: 263, SeqLen: 3, Sequences: 1},
		{Version: 3, LossMask: true, TokenWidth: 2, Tokenizer: "b", Vocab: 263, SeqLen: 3, Sequences: 1},
	} {
		if _, err := shard.AppendHeader(nil, h); !errors.Is(err, shard.ErrBadHeader) {
			t.Errorf("version %d with loss mask %v: %v, want ErrBadHeader", h.Version, h.LossMask, err)
		}
	}
	file := maskedFile(t, 3, 2, append(tokens, 0))
	binary.LittleEndian.PutUint16(file[8:], 3)
	if _, err := shard.DecodeHeader(file); !errors.Is(err, shard.ErrBadHeader) || !strings.Contains(err.Error(), "version 3") {
		t.Errorf("version 3: %v", err)
	}
}

// maskedManifest is a valid manifest of a chat dataset built by hand.
func maskedManifest() *shard.Manifest {
	m := sampleManifest()
	m.FormatVersion, m.LossMask = shard.FormatVersionMasked, true
	m.Source.Format, m.Source.ChatTemplate, m.Source.Trained, m.Source.TrainedCut = shard.FormatChat, "llama3", 8, 2
	m.ID = m.ComputeID()
	return m
}

// TestManifestLossMask: a manifest says whether its dataset has a loss
// mask, consistently with its version and source format; one without a
// mask keeps the id it had before masks existed; a shard whose mask
// disagrees with the manifest is refused.
func TestManifestLossMask(t *testing.T) {
	m := maskedManifest()
	if _, err := shard.DecodeManifest(m.Encode()); err != nil {
		t.Fatalf("a chat manifest: %v", err)
	}
	if plain := sampleManifest().Encode(); strings.Contains(string(plain), "loss_mask") || strings.Contains(string(plain), "trained") || strings.Contains(string(plain), "chat_template") {
		t.Errorf("a manifest without a mask names the mask's fields:\n%s", plain)
	}
	for _, tc := range []struct {
		name string
		edit func(m *shard.Manifest)
		want string
	}{
		{"version 1 with a mask", func(m *shard.Manifest) { m.FormatVersion = 1 }, "format_version 1 with loss_mask true"},
		{"version 2 without a mask", func(m *shard.Manifest) { m.LossMask = false }, "format_version 2 with loss_mask false"},
		{"version 3", func(m *shard.Manifest) { m.FormatVersion = 3 }, "format_version 3"},
		{"text with a mask", func(m *shard.Manifest) { m.Source.Format = shard.FormatText }, "source.format text with loss_mask true"},
		{"chat without a mask", func(m *shard.Manifest) {
			m.FormatVersion, m.LossMask, m.Source.Trained, m.Source.TrainedCut = 1, false, 0, 0
		}, "source.format chat with loss_mask false"},
		{"no template", func(m *shard.Manifest) { m.Source.ChatTemplate = "" }, "source.chat_template"},
		{"unknown template", func(m *shard.Manifest) { m.Source.ChatTemplate = "alpaca" }, `"alpaca"`},
		{"more trained than tokens", func(m *shard.Manifest) { m.Source.Trained = 21 }, "trained_tokens 21"},
		{"more cut than trained", func(m *shard.Manifest) { m.Source.TrainedCut = 9 }, "trained_tokens_cut 9"},
	} {
		c := *maskedManifest()
		tc.edit(&c)
		c.ID = c.ComputeID()
		if _, err := shard.DecodeManifest(c.Encode()); !errors.Is(err, shard.ErrBadManifest) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrBadManifest saying %q", tc.name, err, tc.want)
		}
	}

	rng := rand.New(rand.NewPCG(7, 8))
	toks := randomTokens(rng, 3, 4, 257)
	masked, _, _ := shard.EncodeMaskedShard("byte", 257, 4, toks, randomFlags(rng, len(toks)))
	plain, _, _ := shard.EncodeShard("byte", 257, 4, toks)
	for _, c := range []struct {
		m    *shard.Manifest
		file []byte
	}{{sampleManifest(), masked}, {maskedManifest(), plain}} {
		e := c.m.Shards[0]
		e.Hash, e.Bytes = sha256Hex(c.file), int64(len(c.file))
		if err := shard.VerifyEntry(c.m, e, c.file, "x.shard"); !errors.Is(err, shard.ErrMismatch) || !strings.Contains(err.Error(), "loss mask") {
			t.Errorf("a shard whose mask disagrees with the manifest (loss_mask %v): %v", c.m.LossMask, err)
		}
	}
}
