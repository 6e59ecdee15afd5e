package shard_test

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/braidml/braid/shard"
)

// seedShards returns valid shard files of both token widths, with and
// without a loss mask.
func seedShards(f *testing.F) [][]byte {
	rng := rand.New(rand.NewPCG(30, 1))
	var out [][]byte
	for _, tc := range []struct {
		name     string
		vocab, T int
		n        int
	}{{"byte", 257, 4, 3}, {"gpt2", 50257, 16, 2}, {"x", 1 << 20, 1, 1}} {
		file, _, err := shard.EncodeShard(tc.name, tc.vocab, tc.T, randomTokens(rng, tc.n, tc.T, tc.vocab))
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, file)
		toks := randomTokens(rng, tc.n, tc.T, tc.vocab)
		if file, _, err = shard.EncodeMaskedShard(tc.name, tc.vocab, tc.T, toks, randomFlags(rng, len(toks))); err != nil {
			f.Fatal(err)
		}
		out = append(out, file)
	}
	return out
}

// FuzzDecodeHeader: any bytes decode to a header or an error, never a
// panic; a header that decodes encodes back to the same bytes.
func FuzzDecodeHeader(f *testing.F) {
	for _, file := range seedShards(f) {
		f.Add(file)
		f.Add(file[:45])
	}
	f.Add([]byte("BRDSHARD"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := shard.DecodeHeader(b)
		if err != nil {
			return
		}
		enc, err := shard.AppendHeader(nil, h)
		if err != nil {
			t.Fatalf("decoded header %+v does not encode: %v", h, err)
		}
		if !bytes.Equal(enc, b[:h.Size()]) {
			t.Fatalf("header %+v re-encodes to other bytes", h)
		}
	})
}

// FuzzDecodeShard: any bytes decode to a shard or an error, never a panic,
// and a decoded shard holds the tokens its header promises, all in the
// vocabulary, and a mask flag for each; one without a loss mask trains on
// every token.
func FuzzDecodeShard(f *testing.F) {
	for _, file := range seedShards(f) {
		f.Add(file)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := shard.DecodeShard(b)
		if err != nil {
			return
		}
		if int64(s.NumTokens()) != s.Header.Tokens() {
			t.Fatalf("%d tokens, header says %d", s.NumTokens(), s.Header.Tokens())
		}
		for i := range s.NumTokens() {
			if tok := s.Token(i); tok < 0 || int(tok) >= s.Header.Vocab {
				t.Fatalf("token %d outside vocab %d", tok, s.Header.Vocab)
			}
			if !s.Header.LossMask && !s.Trained(i) {
				t.Fatalf("token %d untrained in a shard without a mask", i)
			}
		}
		for i := range s.Header.Sequences {
			if m := s.SequenceMask(i, nil); len(m) != s.Header.SeqLen+1 {
				t.Fatalf("sequence %d: %d flags", i, len(m))
			}
		}
	})
}

// sampleManifest is a valid manifest built by hand.
func sampleManifest() *shard.Manifest {
	m := &shard.Manifest{
		Name: "sample", FormatVersion: shard.FormatVersion, Tokenizer: "byte", Vocab: 257, EOT: 256, SeqLen: 4, Holdout: 0.05,
		Shards: []shard.ShardEntry{
			{Hash: strings.Repeat("a", 64), Split: shard.Train, Sequences: 3, Tokens: 13, Bytes: 80},
			{Hash: strings.Repeat("b", 64), Split: shard.Heldout, Sequences: 1, Tokens: 5, Bytes: 60},
		},
		Totals: shard.Totals{
			Train:   shard.SplitTotals{Shards: 1, Sequences: 3, Tokens: 13, Bytes: 80, Dropped: 2},
			Heldout: shard.SplitTotals{Shards: 1, Sequences: 1, Tokens: 5, Bytes: 60},
		},
		Source: shard.SourceStats{Format: shard.FormatText, Files: 3, Documents: 2, Bytes: 20, TextBytes: 18, Tokens: 20,
			Skipped: map[shard.Reason]int64{shard.ReasonBinary: 1}},
	}
	m.ID = m.ComputeID()
	return m
}

// FuzzDecodeManifest: any bytes decode to a manifest or an error, never a
// panic; a manifest that decodes is valid and survives encoding again.
func FuzzDecodeManifest(f *testing.F) {
	enc := sampleManifest().Encode()
	f.Add(enc)
	f.Add(enc[:len(enc)/2])
	f.Add(maskedManifest().Encode())
	f.Add([]byte(`{"id":""}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := shard.DecodeManifest(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded but invalid: %v", err)
		}
		again, err := shard.DecodeManifest(m.Encode())
		if err != nil || !reflect.DeepEqual(m, again) {
			t.Fatalf("does not round-trip: %v", err)
		}
	})
}

func TestSampleManifestIsValid(t *testing.T) {
	m := sampleManifest()
	got, err := shard.DecodeManifest(m.Encode())
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("%v\n%+v", err, got)
	}
}
