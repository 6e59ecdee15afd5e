package shard_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/braidml/braid/shard"
)

// smallDataset prepares a dataset of several shards in both splits.
func smallDataset(t *testing.T) *shard.Result {
	t.Helper()
	return prepare(t, config(filepath.Join(t.TempDir(), "ds"), writeFiles(t, textCorpus(60, 7))))
}

// TestManifestID: the id is the SHA-256 of the content without id and
// name; any change of content changes it, a new name does not.
func TestManifestID(t *testing.T) {
	m := smallDataset(t).Manifest
	if m.ID != m.ComputeID() || len(m.ID) != 64 {
		t.Fatalf("id %q, content gives %q", m.ID, m.ComputeID())
	}
	renamed := *m
	renamed.Name = "another"
	if renamed.ComputeID() != m.ID {
		t.Error("the name changed the id")
	}
	for field, change := range map[string]func(*shard.Manifest){
		"seq_len": func(m *shard.Manifest) { m.SeqLen++ },
		"holdout": func(m *shard.Manifest) { m.Holdout = 0.1 },
		"shard hash": func(m *shard.Manifest) {
			m.Shards = append([]shard.ShardEntry(nil), m.Shards...)
			m.Shards[0].Hash = strings.Repeat("0", 64)
		},
		"totals": func(m *shard.Manifest) { m.Totals.Train.Dropped++ },
		"source": func(m *shard.Manifest) { m.Source.Files++ },
	} {
		c := *m
		change(&c)
		if c.ComputeID() == m.ID {
			t.Errorf("changing %s kept the id", field)
		}
	}
}

// TestManifestRoundTrip: what is written decodes to the same manifest.
func TestManifestRoundTrip(t *testing.T) {
	res := smallDataset(t)
	got, err := shard.ReadManifest(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, res.Manifest) {
		t.Errorf("read back %+v\nwrote %+v", got, res.Manifest)
	}
	if refs := got.ShardRefs(); len(refs) == 0 || refs[0].Hash != got.Shards[0].Hash || refs[0].Bytes != got.Shards[0].Bytes {
		t.Errorf("ShardRefs %v", refs)
	}
}

// TestReadManifestErrors: a damaged manifest gives a clear error naming
// the file and what is wrong.
func TestReadManifestErrors(t *testing.T) {
	res := smallDataset(t)
	path := filepath.Join(res.Dir, shard.ManifestName)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(orig)
	tests := []struct {
		name, content, want string
	}{
		{"truncated", s[:len(s)/2], "truncated"},
		{"empty", "", "truncated"},
		{"not JSON", "hello", "syntax error at byte"},
		{"unknown field", strings.Replace(s, `"name"`, `"colour": "red", "name"`, 1), `unknown field "colour"`},
		{"edited content", strings.Replace(s, `"holdout": 0.2`, `"holdout": 0.3`, 1), "does not match the content"},
		{"bad totals", strings.Replace(s, `"shards": `+strconv.Itoa(res.Manifest.Totals.Train.Shards), `"shards": 99`, 1), "totals.train"},
		{"bad split", strings.Replace(s, `"split": "heldout"`, `"split": "test"`, 1), `split "test"`},
		{"bad hash", strings.Replace(s, res.Manifest.Shards[0].Hash, "xyz", 1), `shards[0].hash "xyz"`},
		{"trailing data", s + "{}", "data after the JSON object"},
		{"version", strings.Replace(s, `"format_version": 1`, `"format_version": 2`, 1), "format_version 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), shard.ManifestName)
			if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := shard.ReadManifest(p)
			if !errors.Is(err, shard.ErrBadManifest) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%v, want ErrBadManifest naming %s and saying %q", err, p, tt.want)
			}
		})
	}
	if _, err := shard.ReadManifest(t.TempDir()); err == nil || !strings.Contains(err.Error(), shard.ManifestName) {
		t.Errorf("no manifest: %v", err)
	}
}

// TestVerifyNamesBadShards: Verify lists exactly the bad shards, each with
// what is wrong, and passes the good ones.
func TestVerifyNamesBadShards(t *testing.T) {
	res := smallDataset(t)
	r, err := shard.Verify(res.Dir)
	if err != nil || !r.OK() || r.Checked != len(res.Manifest.Shards) {
		t.Fatalf("fresh dataset: %v, %+v", err, r)
	}
	shards := res.Manifest.Shards
	if len(shards) < 6 {
		t.Fatalf("%d shards; the test damages 5", len(shards))
	}
	path := func(i int) string { return shard.ShardPath(res.Dir, shards[i].Hash) }
	damage := map[int]error{}
	// 0: missing.
	os.Remove(path(0))
	damage[0] = shard.ErrMissing
	// 1: truncated.
	b, _ := os.ReadFile(path(1))
	os.WriteFile(path(1), b[:len(b)/2], 0o644)
	damage[1] = shard.ErrTruncated
	// 2: another shard's content under its name (wrong hash).
	b, _ = os.ReadFile(path(len(shards) - 1))
	os.WriteFile(path(2), b, 0o644)
	damage[2] = shard.ErrHashMismatch
	// 3: a bad header.
	b, _ = os.ReadFile(path(3))
	b[0] = 'X'
	os.WriteFile(path(3), b, 0o644)
	damage[3] = shard.ErrBadHeader
	// 4: one payload bit flipped: the hash no longer matches.
	b, _ = os.ReadFile(path(4))
	b[len(b)-30] ^= 1
	os.WriteFile(path(4), b, 0o644)
	damage[4] = shard.ErrHashMismatch

	r, err = shard.Verify(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != len(damage) {
		t.Errorf("%d problems, want %d: %v", len(r.Problems), len(damage), r.Problems)
	}
	for _, p := range r.Problems {
		i := indexOf(shards, p.Hash)
		want, ok := damage[i]
		if !ok || !errors.Is(p.Err, want) || !strings.Contains(p.Err.Error(), path(i)) {
			t.Errorf("shard %d: %v, want %v naming %s", i, p.Err, want, path(i))
		}
	}

	// Sequence and Shard report the same damage, and a failed read is
	// tried again once the file is repaired.
	d, err := shard.Open(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Shard(shards[0].Hash); !errors.Is(err, shard.ErrMissing) {
		t.Errorf("missing shard through Dataset: %v", err)
	}
	good, _ := os.ReadFile(path(5))
	os.Rename(path(5), path(5)+".away")
	if _, err := d.Shard(shards[5].Hash); !errors.Is(err, shard.ErrMissing) {
		t.Errorf("moved-away shard: %v", err)
	}
	os.WriteFile(path(5), good, 0o644)
	if _, err := d.Shard(shards[5].Hash); err != nil {
		t.Errorf("repaired shard: %v", err)
	}
}

func indexOf(shards []shard.ShardEntry, hash string) int {
	for i, e := range shards {
		if e.Hash == hash {
			return i
		}
	}
	return -1
}

// TestVerifyHeaderAgainstManifest: a good shard file that is not the one
// the manifest describes (another seq_len) is named.
func TestVerifyHeaderAgainstManifest(t *testing.T) {
	res := smallDataset(t)
	m := *res.Manifest
	m.Shards = append([]shard.ShardEntry(nil), m.Shards...)
	e := &m.Shards[0]
	toks := make([]int32, e.Sequences*2*16+1) // 2·sequences of 16 tokens: the same token count, another seq_len
	file, hash, err := shard.EncodeShard(m.Tokenizer, m.Vocab, 16, toks)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(shard.ShardPath(res.Dir, hash), file, 0o644)
	m.Totals.Train.Bytes += int64(len(file)) - e.Bytes
	e.Hash, e.Bytes = hash, int64(len(file))
	m.ID = m.ComputeID()
	if err := shard.WriteManifest(res.Dir, &m); err != nil {
		t.Fatal(err)
	}
	r, err := shard.Verify(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 1 || !errors.Is(r.Problems[0].Err, shard.ErrMismatch) || !strings.Contains(r.Problems[0].Err.Error(), "seq_len 16") {
		t.Errorf("problems %v, want one header mismatch on seq_len", r.Problems)
	}
}

// TestDatasetConcurrentReads: many goroutines reading sequences share one
// read of each shard and get the right tokens (run with -race).
func TestDatasetConcurrentReads(t *testing.T) {
	res := smallDataset(t)
	d, err := shard.Open(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	n := d.NumSequences(shard.Train)
	want := make([][]int32, n)
	for id := range n {
		if want[id], err = d.Sequence(shard.Train, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for id := int64(g); id < n; id += 3 {
				got, err := d.Sequence(shard.Train, id, nil)
				if err != nil || !slices.Equal(got, want[id]) {
					t.Errorf("goroutine %d, sequence %d: %v %v", g, id, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
	e, i, err := d.Locate(shard.Train, n-1)
	if err != nil || e.Hash != res.Manifest.SplitShards(shard.Train)[res.Manifest.Totals.Train.Shards-1].Hash || i != e.Sequences-1 {
		t.Errorf("Locate(last) = %v, %d, %v", e, i, err)
	}
}
