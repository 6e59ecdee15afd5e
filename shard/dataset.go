package shard

import (
	"fmt"
	"sort"
	"sync"
)

// Dataset is an opened dataset directory: its manifest, and its shards
// read on first use. Methods are safe for concurrent use.
//
// Shards are verified when first read and then kept in memory (their
// uncompressed payload) until Close: a node reads the shards it holds and
// trains on them for the whole job. A shard that is not in the directory
// (held by other nodes) is an error only when one of its sequences is asked
// for.
type Dataset struct {
	Dir      string
	Manifest *Manifest

	splits map[Split]*splitIndex

	mu     sync.Mutex
	shards map[string]*loadedShard // by hash
}

// splitIndex locates global sequence ids of one split: entry i of shards
// holds ids [start[i], start[i]+shards[i].Sequences).
type splitIndex struct {
	shards []ShardEntry
	start  []int64
	total  int64
}

// loadedShard is a shard being read or read; ready is closed when s or err
// is set, so concurrent callers wait for one read instead of each reading.
type loadedShard struct {
	ready chan struct{}
	s     *Shard
	err   error
}

// Open reads and checks dir's manifest. It reads no shard.
func Open(dir string) (*Dataset, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	d := &Dataset{Dir: dir, Manifest: m, splits: map[Split]*splitIndex{}, shards: map[string]*loadedShard{}}
	for _, s := range []Split{Train, Heldout} {
		ix := &splitIndex{shards: m.SplitShards(s)}
		for _, e := range ix.shards {
			ix.start = append(ix.start, ix.total)
			ix.total += e.Sequences
		}
		d.splits[s] = ix
	}
	return d, nil
}

// NumSequences is the number of sequences in split s.
func (d *Dataset) NumSequences(s Split) int64 {
	if ix := d.splits[s]; ix != nil {
		return ix.total
	}
	return 0
}

// Locate returns the shard that holds global sequence id of split s, and
// the sequence's index inside that shard.
func (d *Dataset) Locate(s Split, id int64) (ShardEntry, int64, error) {
	ix := d.splits[s]
	if ix == nil || id < 0 || id >= ix.total {
		return ShardEntry{}, 0, fmt.Errorf("shard: %s sequence %d out of range [0, %d)", s, id, d.NumSequences(s))
	}
	i := sort.Search(len(ix.start), func(i int) bool { return ix.start[i] > id }) - 1
	return ix.shards[i], id - ix.start[i], nil
}

// Sequence appends the T+1 tokens of global sequence id of split s to dst
// and returns it; inputs are the first T tokens, targets the last T. The
// shard that holds it is read and verified on first use.
func (d *Dataset) Sequence(s Split, id int64, dst []int32) ([]int32, error) {
	sh, i, err := d.locateShard(s, id)
	if err != nil {
		return dst, err
	}
	return sh.Sequence(i, dst), nil
}

// SequenceMask appends the T+1 loss-mask flags of global sequence id of
// split s to dst and returns it, aligned with Sequence: the loss counts on
// target j (token j+1 of the sequence) when flag j+1 is set. Without a loss
// mask (Manifest.LossMask false) every flag is set.
func (d *Dataset) SequenceMask(s Split, id int64, dst []bool) ([]bool, error) {
	sh, i, err := d.locateShard(s, id)
	if err != nil {
		return dst, err
	}
	return sh.SequenceMask(i, dst), nil
}

// locateShard returns the shard that holds global sequence id of split s,
// read on first use, and the sequence's index in it.
func (d *Dataset) locateShard(s Split, id int64) (*Shard, int64, error) {
	e, i, err := d.Locate(s, id)
	if err != nil {
		return nil, 0, err
	}
	sh, err := d.Shard(e.Hash)
	return sh, i, err
}

// Shard returns the shard of a hash listed in the manifest, reading and
// verifying it on first use (and checking its header against the
// manifest). Concurrent callers share one read. A failed read is not
// kept: a later call reads the file again (it may have arrived since).
func (d *Dataset) Shard(hash string) (*Shard, error) {
	d.mu.Lock()
	l, ok := d.shards[hash]
	if !ok {
		l = &loadedShard{ready: make(chan struct{})}
		d.shards[hash] = l
	}
	d.mu.Unlock()
	if ok {
		<-l.ready
		return l.s, l.err
	}
	l.s, l.err = d.load(hash)
	if l.err != nil {
		d.mu.Lock()
		if d.shards[hash] == l {
			delete(d.shards, hash)
		}
		d.mu.Unlock()
	}
	close(l.ready)
	return l.s, l.err
}

func (d *Dataset) load(hash string) (*Shard, error) {
	var entry *ShardEntry
	for i := range d.Manifest.Shards {
		if d.Manifest.Shards[i].Hash == hash {
			entry = &d.Manifest.Shards[i]
			break
		}
	}
	if entry == nil {
		return nil, fmt.Errorf("shard: %s is not in the manifest of %s", hash, d.Dir)
	}
	path := ShardPath(d.Dir, hash)
	s, err := readShard(path, hash)
	if err != nil {
		return nil, err
	}
	if err := checkAgainstManifest(d.Manifest, *entry, s.Header); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// checkAgainstManifest compares a shard's header with its manifest entry.
func checkAgainstManifest(m *Manifest, e ShardEntry, h Header) error {
	switch {
	case h.Tokenizer != m.Tokenizer:
		return fmt.Errorf("%w: tokenizer %q, manifest %q", ErrMismatch, h.Tokenizer, m.Tokenizer)
	case h.LossMask != m.LossMask:
		return fmt.Errorf("%w: loss mask %v, manifest %v", ErrMismatch, h.LossMask, m.LossMask)
	case h.Vocab != m.Vocab:
		return fmt.Errorf("%w: vocab %d, manifest %d", ErrMismatch, h.Vocab, m.Vocab)
	case h.SeqLen != m.SeqLen:
		return fmt.Errorf("%w: seq_len %d, manifest %d", ErrMismatch, h.SeqLen, m.SeqLen)
	case h.Sequences != e.Sequences:
		return fmt.Errorf("%w: %d sequences, manifest %d", ErrMismatch, h.Sequences, e.Sequences)
	case h.FileBytes() != e.Bytes:
		return fmt.Errorf("%w: %d bytes, manifest %d", ErrMismatch, h.FileBytes(), e.Bytes)
	}
	return nil
}

// Close drops the shards read so far.
func (d *Dataset) Close() error {
	d.mu.Lock()
	d.shards = map[string]*loadedShard{}
	d.mu.Unlock()
	return nil
}
