package shard

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
)

// The sampler. A data-epoch is one pass over every train sequence in a
// seeded order; global batch k of data-epoch e holds positions
// [k·G, min((k+1)·G, n)) of that order. The order depends on (seed, e, n)
// only, never on the members, so a change of membership between steps
// changes who trains on a sequence, not which sequences form a batch: each
// is used exactly once per data-epoch.

// BatchesPerEpoch is the number of global batches of size g in a data-epoch
// of n sequences: ceil(n/g), the last one short when g does not divide n.
func BatchesPerEpoch(n int64, g int) int64 {
	if n <= 0 || g <= 0 {
		return 0
	}
	return (n + int64(g) - 1) / int64(g)
}

// EpochStep maps a job's global step (from 0) to its data-epoch and its
// batch within that epoch, for n train sequences and global batch size g.
func EpochStep(step, n int64, g int) (epoch uint64, k int64) {
	per := BatchesPerEpoch(n, g)
	if per == 0 || step < 0 {
		return 0, 0
	}
	return uint64(step / per), step % per
}

// GlobalBatch returns the train sequence ids of global batch k of
// data-epoch epoch: the slice [k·g, min((k+1)·g, n)) of the epoch's seeded
// permutation of 0..n-1. It is a pure function of its arguments.
func GlobalBatch(seed, epoch uint64, k int64, g int, n int64) ([]int64, error) {
	per := BatchesPerEpoch(n, g)
	switch {
	case g < 1:
		return nil, fmt.Errorf("shard: global batch size %d, want ≥ 1", g)
	case n < 1:
		return nil, fmt.Errorf("shard: %d train sequences, want ≥ 1", n)
	case k < 0 || k >= per:
		return nil, fmt.Errorf("shard: batch %d of a data-epoch of %d batches", k, per)
	}
	p := newPermutation(seed, epoch, uint64(n))
	lo, hi := k*int64(g), min((k+1)*int64(g), n)
	ids := make([]int64, 0, hi-lo)
	for i := lo; i < hi; i++ {
		ids = append(ids, int64(p.at(uint64(i))))
	}
	return ids, nil
}

// permutation is a seeded bijection of [0, n) that maps one index in O(1)
// time and memory, so a data-epoch of a billion sequences needs no table.
// It is a balanced Feistel network on 2·half bits (the smallest even width
// with 4^half ≥ n) whose round keys come from a PCG seeded with (seed,
// epoch), made a bijection of [0, n) by cycle walking: an output ≥ n is
// encrypted again until it falls below n (under 4 rounds of walking on
// average, as 4^half < 4n).
type permutation struct {
	n    uint64
	half uint   // bits in each Feistel half
	mask uint64 // (1 << half) - 1
	keys [feistelRounds]uint64
}

const feistelRounds = 6

func newPermutation(seed, epoch, n uint64) permutation {
	p := permutation{n: n, half: 1}
	for p.half < 32 && uint64(1)<<(2*p.half) < n {
		p.half++
	}
	p.mask = 1<<p.half - 1
	pcg := rand.NewPCG(seed, epoch)
	for i := range p.keys {
		p.keys[i] = pcg.Uint64()
	}
	return p
}

// at returns the position-i element of the permutation, 0 ≤ i < n.
func (p permutation) at(i uint64) uint64 {
	x := p.encrypt(i)
	for x >= p.n {
		x = p.encrypt(x)
	}
	return x
}

// encrypt is one pass of the Feistel network: a bijection of [0, 4^half).
func (p permutation) encrypt(x uint64) uint64 {
	l, r := x>>p.half, x&p.mask
	for _, k := range p.keys {
		l, r = r, l^(mix64(r^k)&p.mask)
	}
	return l<<p.half | r
}

// mix64 is SplitMix64's finaliser: every input bit affects every output bit.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// AssignParams are the inputs of Assign: everything a worker derives its
// share of a step from, all of it agreed through the coordinator.
type AssignParams struct {
	Seed      uint64
	DataEpoch uint64
	// Step is the batch within the data-epoch: 0 ≤ Step <
	// BatchesPerEpoch(n, GlobalBatch) (EpochStep converts a global step).
	Step        int64
	GlobalBatch int // G, sequences per global batch
	// Members are the epoch's members in ring order; part i of the result
	// is Members[i]'s.
	Members []string
	// Placement says who holds each shard (Place); it may be nil, and it
	// may name nodes that are not members.
	Placement Placement
	// Shards are the dataset's train shards in manifest order
	// (Manifest.SplitShards(Train)); Hash and Sequences are used.
	Shards []ShardEntry
}

// Assign splits global batch Step of data-epoch DataEpoch among Members:
// part i lists the train sequence ids Members[i] trains on, in the order of
// the global batch. The parts are disjoint and together are exactly the
// global batch; their sizes differ by at most one (the first b mod m
// members take one more). Within those sizes, as many sequences as
// possible go to a member that holds their shard: a maximum matching of
// sequences to holders found by augmenting paths, in a fixed order, so the
// result is deterministic. The rest fill the remaining places in member
// order.
//
// Assign is a pure function: every worker computes every part from the
// same inputs and gets the same answer.
func Assign(p AssignParams) ([][]int64, error) {
	if len(p.Members) == 0 {
		return nil, errors.New("shard: assign: no members")
	}
	member := make(map[string]int, len(p.Members))
	for i, id := range p.Members {
		if _, dup := member[id]; dup {
			return nil, fmt.Errorf("shard: assign: member %q listed twice", id)
		}
		member[id] = i
	}
	starts := make([]int64, len(p.Shards))
	var n int64
	for i, e := range p.Shards {
		if e.Sequences < 1 {
			return nil, fmt.Errorf("shard: assign: shard %d (%s) has %d sequences", i, e.Hash, e.Sequences)
		}
		starts[i] = n
		n += e.Sequences
	}
	batch, err := GlobalBatch(p.Seed, p.DataEpoch, p.Step, p.GlobalBatch, n)
	if err != nil {
		return nil, err
	}

	// cand[s]: the members that hold batch[s]'s shard, in placement order.
	holders := make(map[string][]int, len(p.Shards))
	cand := make([][]int, len(batch))
	for s, id := range batch {
		sh := p.Shards[sort.Search(len(starts), func(i int) bool { return starts[i] > id })-1].Hash
		c, ok := holders[sh]
		if !ok {
			for _, node := range p.Placement[sh] {
				if j, ok := member[node]; ok && !slices.Contains(c, j) {
					c = append(c, j)
				}
			}
			holders[sh] = c
		}
		cand[s] = c
	}

	m := len(p.Members)
	b := len(batch)
	quota := make([]int, m)
	for j := range quota {
		quota[j] = b / m
		if j < b%m {
			quota[j]++
		}
	}
	mt := matcher{cand: cand, quota: quota, owner: make([]int, b), parts: make([][]int, m), seen: make([]bool, m)}
	for s := range batch {
		mt.owner[s] = -1
	}
	for s := range batch {
		if len(cand[s]) > 0 {
			clear(mt.seen)
			mt.augment(s)
		}
	}
	// Sequences nobody holds (or whose holders are full) fill the places
	// left, in member order.
	j := 0
	for s := range batch {
		if mt.owner[s] >= 0 {
			continue
		}
		for len(mt.parts[j]) == quota[j] {
			j++
		}
		mt.parts[j] = append(mt.parts[j], s)
		mt.owner[s] = j
	}
	out := make([][]int64, m)
	for j, part := range mt.parts {
		slices.Sort(part) // batch order
		out[j] = make([]int64, len(part))
		for i, s := range part {
			out[j][i] = batch[s]
		}
	}
	return out, nil
}

// matcher finds a maximum matching of batch positions to members that hold
// them, each member taking at most its quota (Kuhn's augmenting paths).
type matcher struct {
	cand  [][]int // batch position → candidate members
	quota []int   // member → places
	owner []int   // batch position → member, -1 if none yet
	parts [][]int // member → batch positions
	seen  []bool  // members visited in the current search
}

// augment tries to give position s a candidate member: one with a free
// place, or one whose current position can move to another of its own
// candidates (recursively). It reports whether s got a member.
func (mt *matcher) augment(s int) bool {
	for _, j := range mt.cand[s] {
		if mt.seen[j] {
			continue
		}
		mt.seen[j] = true
		if len(mt.parts[j]) < mt.quota[j] {
			mt.parts[j] = append(mt.parts[j], s)
			mt.owner[s] = j
			return true
		}
		for i, other := range mt.parts[j] {
			if mt.augment(other) {
				mt.parts[j][i] = s
				mt.owner[s] = j
				return true
			}
		}
	}
	return false
}

// Local counts how many of a part's sequences its member holds: the
// sequences whose shard lists member among its holders.
func Local(part []int64, member string, shards []ShardEntry, pl Placement) int {
	var starts []int64
	var n int64
	for _, e := range shards {
		starts = append(starts, n)
		n += e.Sequences
	}
	local := 0
	for _, id := range part {
		i := sort.Search(len(starts), func(i int) bool { return starts[i] > id }) - 1
		if i >= 0 && slices.Contains(pl[shards[i].Hash], member) {
			local++
		}
	}
	return local
}
