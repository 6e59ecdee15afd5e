package shard_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/quick"

	mathrand "math/rand"

	"github.com/braidml/braid/shard"
)

// TestGlobalBatchesCoverEpoch: the batches of a data-epoch use every
// sequence exactly once, in ceil(n/G) batches of G with a short last one;
// the order depends on seed and epoch.
func TestGlobalBatchesCoverEpoch(t *testing.T) {
	for _, tc := range []struct {
		n int64
		g int
	}{{1, 1}, {1, 8}, {2, 1}, {3, 2}, {7, 7}, {10, 3}, {100, 16}, {1000, 1}, {4099, 256}, {65537, 1000}} {
		epochOrder := func(seed, epoch uint64) []int64 {
			var all []int64
			per := shard.BatchesPerEpoch(tc.n, tc.g)
			if want := (tc.n + int64(tc.g) - 1) / int64(tc.g); per != want {
				t.Fatalf("n %d G %d: %d batches, want %d", tc.n, tc.g, per, want)
			}
			for k := range per {
				b, err := shard.GlobalBatch(seed, epoch, k, tc.g, tc.n)
				if err != nil {
					t.Fatal(err)
				}
				if want := min(int64(tc.g), tc.n-k*int64(tc.g)); int64(len(b)) != want {
					t.Fatalf("n %d G %d batch %d: %d ids, want %d", tc.n, tc.g, k, len(b), want)
				}
				all = append(all, b...)
			}
			return all
		}
		order := epochOrder(1, 0)
		sorted := slices.Sorted(slices.Values(order))
		for i, id := range sorted {
			if id != int64(i) {
				t.Fatalf("n %d G %d: the epoch is not a permutation of 0..n-1 (at %d: %d)", tc.n, tc.g, i, id)
			}
		}
		if !slices.Equal(order, epochOrder(1, 0)) {
			t.Errorf("n %d: the same seed and epoch gave another order", tc.n)
		}
		if tc.n >= 100 {
			if slices.Equal(order, epochOrder(1, 1)) || slices.Equal(order, epochOrder(2, 0)) {
				t.Errorf("n %d: another epoch or seed gave the same order", tc.n)
			}
		}
	}
	if _, err := shard.GlobalBatch(1, 0, 4, 4, 16); err == nil {
		t.Error("batch 4 of 4: no error")
	}
}

// TestPermutationIsShuffled: the order is not close to the identity or to
// another epoch's: few fixed points, positions uncorrelated with ids, and
// two epochs' first batches overlap about as much as random sets do.
func TestPermutationIsShuffled(t *testing.T) {
	const n, g = 100000, 1000
	var fixed int
	var sx, sy, sxy, sxx, syy float64
	for k := range shard.BatchesPerEpoch(n, g) {
		b, _ := shard.GlobalBatch(42, 0, k, g, n)
		for i, id := range b {
			pos := float64(k*g + int64(i))
			if int64(pos) == id {
				fixed++
			}
			x, y := pos, float64(id)
			sx, sy, sxy, sxx, syy = sx+x, sy+y, sxy+x*y, sxx+x*x, syy+y*y
		}
	}
	cov := sxy/n - sx/n*sy/n
	corr := cov / math.Sqrt((sxx/n-sx*sx/n/n)*(syy/n-sy*sy/n/n))
	if fixed > 10 || corr > 0.01 || corr < -0.01 {
		t.Errorf("%d fixed points, correlation of position and id %.4f", fixed, corr)
	}
	a, _ := shard.GlobalBatch(42, 0, 0, g, n)
	b, _ := shard.GlobalBatch(42, 1, 0, g, n)
	common := 0
	for _, id := range a {
		if slices.Contains(b, id) {
			common++
		}
	}
	if common > 40 { // expected g·g/n = 10
		t.Errorf("the first batches of two epochs share %d of %d ids", common, g)
	}
}

func TestEpochStep(t *testing.T) {
	for _, tc := range []struct {
		step, n int64
		g       int
		epoch   uint64
		k       int64
	}{{0, 10, 3, 0, 0}, {3, 10, 3, 0, 3}, {4, 10, 3, 1, 0}, {9, 10, 3, 2, 1}, {5, 10, 10, 5, 0}} {
		if e, k := shard.EpochStep(tc.step, tc.n, tc.g); e != tc.epoch || k != tc.k {
			t.Errorf("EpochStep(%d, %d, %d) = %d, %d; want %d, %d", tc.step, tc.n, tc.g, e, k, tc.epoch, tc.k)
		}
	}
}

// cluster is a random dataset and placement for sampler tests.
type cluster struct {
	shards    []shard.ShardEntry
	placement shard.Placement
	nodes     []string
}

func randomCluster(rng *rand.Rand, nShards, nNodes, r int) cluster {
	var c cluster
	var refs []shard.ShardRef
	for i := range nShards {
		h := fmt.Sprintf("%064x", rng.Uint64()+uint64(i))
		c.shards = append(c.shards, shard.ShardEntry{Hash: h, Split: shard.Train, Sequences: 1 + rng.Int64N(40)})
		refs = append(refs, shard.ShardRef{Hash: h, Bytes: 1000})
	}
	var caps []shard.NodeCap
	for j := range nNodes {
		c.nodes = append(c.nodes, fmt.Sprint("node-", j))
		caps = append(caps, shard.NodeCap{ID: c.nodes[j], CapacityBytes: int64(1000 * nShards)})
	}
	pl, err := shard.Place(refs, caps, r)
	if err != nil {
		panic(err)
	}
	c.placement = pl
	return c
}

func (c cluster) n() int64 {
	var n int64
	for _, e := range c.shards {
		n += e.Sequences
	}
	return n
}

// checkParts asserts that parts split the global batch exactly: disjoint,
// covering it, sizes within one of each other, each in batch order.
func checkParts(t *testing.T, p shard.AssignParams, parts [][]int64) {
	t.Helper()
	var n int64
	for _, e := range p.Shards {
		n += e.Sequences
	}
	batch, err := shard.GlobalBatch(p.Seed, p.DataEpoch, p.Step, p.GlobalBatch, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != len(p.Members) {
		t.Fatalf("%d parts for %d members", len(parts), len(p.Members))
	}
	pos := map[int64]int{}
	for i, id := range batch {
		pos[id] = i
	}
	seen := map[int64]bool{}
	lo, hi := len(batch), 0
	for j, part := range parts {
		lo, hi = min(lo, len(part)), max(hi, len(part))
		for i, id := range part {
			if _, ok := pos[id]; !ok {
				t.Fatalf("member %d has %d, which is not in the global batch", j, id)
			}
			if seen[id] {
				t.Fatalf("sequence %d given twice", id)
			}
			seen[id] = true
			if i > 0 && pos[part[i-1]] > pos[id] {
				t.Errorf("member %d's part is not in batch order", j)
			}
		}
	}
	if len(seen) != len(batch) {
		t.Fatalf("%d of the batch's %d sequences given out", len(seen), len(batch))
	}
	if hi-lo > 1 {
		t.Errorf("part sizes from %d to %d", lo, hi)
	}
}

// TestAssignProperties: for random seeds, datasets, placements, batch
// sizes and memberships (testing/quick with a seeded source), the parts
// split the global batch exactly and the same input gives the same parts.
func TestAssignProperties(t *testing.T) {
	prop := func(seed uint64, epoch uint8, shards, nodes, members uint8, g uint16, step uint16) bool {
		rng := rand.New(rand.NewPCG(seed, 0))
		c := randomCluster(rng, 1+int(shards)%30, 1+int(nodes)%8, 2)
		// Members: some placed nodes, maybe some without data.
		var ms []string
		for _, id := range c.nodes {
			if rng.IntN(3) > 0 {
				ms = append(ms, id)
			}
		}
		for i := range int(members) % 3 {
			ms = append(ms, fmt.Sprint("newcomer-", i))
		}
		if len(ms) == 0 {
			ms = []string{"only"}
		}
		rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		G := 1 + int(g)%300
		p := shard.AssignParams{Seed: seed, DataEpoch: uint64(epoch), Step: int64(step) % shard.BatchesPerEpoch(c.n(), G),
			GlobalBatch: G, Members: ms, Placement: c.placement, Shards: c.shards}
		parts, err := shard.Assign(p)
		if err != nil {
			t.Errorf("Assign: %v", err)
			return false
		}
		checkParts(t, p, parts)
		again, _ := shard.Assign(p)
		return slices.EqualFunc(parts, again, slices.Equal) && !t.Failed()
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 300, Rand: newMathRand(7)}); err != nil {
		t.Error(err)
	}
}

// TestAssignExactlyOncePerEpoch: over two data-epochs whose membership
// changes between steps (members leave and join, seeded), every training
// sequence is used exactly once per data-epoch.
func TestAssignExactlyOncePerEpoch(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 1))
	c := randomCluster(rng, 25, 6, 2)
	n, G := c.n(), 37
	members := slices.Clone(c.nodes[:3])
	pool := append(slices.Clone(c.nodes[3:]), "joiner-a", "joiner-b")
	for epoch := range uint64(2) {
		used := make([]int, n)
		for k := range shard.BatchesPerEpoch(n, G) {
			// Change membership before some steps: one leaves, one joins.
			if rng.IntN(2) == 0 && len(members) > 1 {
				i := rng.IntN(len(members))
				pool = append(pool, members[i])
				members = slices.Delete(members, i, i+1)
			}
			if rng.IntN(2) == 0 && len(pool) > 0 {
				i := rng.IntN(len(pool))
				members = append(members, pool[i])
				pool = slices.Delete(pool, i, i+1)
			}
			p := shard.AssignParams{Seed: 99, DataEpoch: epoch, Step: k, GlobalBatch: G, Members: members, Placement: c.placement, Shards: c.shards}
			parts, err := shard.Assign(p)
			if err != nil {
				t.Fatal(err)
			}
			checkParts(t, p, parts)
			for _, part := range parts {
				for _, id := range part {
					used[id]++
				}
			}
		}
		for id, u := range used {
			if u != 1 {
				t.Fatalf("epoch %d: sequence %d used %d times", epoch, id, u)
			}
		}
	}
}

// TestAssignLocality: when every shard has a holder among the members and
// holders have places to spare, (nearly) every sequence is trained on by a
// member that holds it; when all data is on one member, that member's
// place count bounds what can be local.
func TestAssignLocality(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 1))
	c := randomCluster(rng, 40, 4, 2) // every shard on 2 of the 4 members
	n, G := c.n(), 64
	local, total := 0, 0
	for k := range shard.BatchesPerEpoch(n, G) {
		parts, err := shard.Assign(shard.AssignParams{Seed: 5, Step: k, GlobalBatch: G, Members: c.nodes, Placement: c.placement, Shards: c.shards})
		if err != nil {
			t.Fatal(err)
		}
		for j, part := range parts {
			local += shard.Local(part, c.nodes[j], c.shards, c.placement)
			total += len(part)
		}
	}
	if frac := float64(local) / float64(total); frac < 0.97 {
		t.Errorf("%.3f of sequences served locally, want ≥ 0.97", frac)
	} else {
		t.Logf("%.4f served locally (%d of %d)", frac, local, total)
	}

	// Everything on node-0: it can take only its quarter of each batch.
	all := shard.Placement{}
	for _, e := range c.shards {
		all[e.Hash] = []string{"node-0"}
	}
	parts, err := shard.Assign(shard.AssignParams{Seed: 5, GlobalBatch: G, Members: c.nodes, Placement: all, Shards: c.shards})
	if err != nil {
		t.Fatal(err)
	}
	if l := shard.Local(parts[0], "node-0", c.shards, all); l != G/4 {
		t.Errorf("node-0 serves %d locally, want its quota %d", l, G/4)
	}
}

// TestAssignMatchingBeatsGreedy: a case where taking each sequence's first
// holder fails, and augmenting paths succeed. Shard A is on m1 only, shard
// B on m0 and m1; with batches of 2 and quota 1 each, a greedy split that
// gives a B sequence to m1 first leaves the A sequence remote.
func TestAssignMatchingBeatsGreedy(t *testing.T) {
	a, b := fmt.Sprintf("%064x", 0xa), fmt.Sprintf("%064x", 0xb)
	shards := []shard.ShardEntry{{Hash: a, Sequences: 50}, {Hash: b, Sequences: 50}}
	pl := shard.Placement{a: {"m1"}, b: {"m1", "m0"}}
	members := []string{"m0", "m1"}
	sawBA := false
	for k := range int64(50) {
		p := shard.AssignParams{Seed: 3, Step: k, GlobalBatch: 2, Members: members, Placement: pl, Shards: shards}
		parts, err := shard.Assign(p)
		if err != nil {
			t.Fatal(err)
		}
		batch, _ := shard.GlobalBatch(p.Seed, 0, k, 2, 100)
		local := shard.Local(parts[0], "m0", shards, pl) + shard.Local(parts[1], "m1", shards, pl)
		want := 2
		if batch[0] < 50 && batch[1] < 50 {
			want = 1 // two A sequences: only m1 holds them, and it takes one
		}
		sawBA = sawBA || batch[0] >= 50 && batch[1] < 50
		if local != want {
			t.Errorf("step %d: batch %v split %v, %d local, want %d", k, batch, parts, local, want)
		}
	}
	if !sawBA {
		t.Error("no batch had a B sequence before an A one: the case greedy gets wrong never came up")
	}
}

func TestAssignErrors(t *testing.T) {
	c := randomCluster(rand.New(rand.NewPCG(22, 1)), 3, 2, 1)
	base := shard.AssignParams{GlobalBatch: 4, Members: c.nodes, Placement: c.placement, Shards: c.shards}
	for name, change := range map[string]func(*shard.AssignParams){
		"no members":       func(p *shard.AssignParams) { p.Members = nil },
		"duplicate member": func(p *shard.AssignParams) { p.Members = []string{"a", "a"} },
		"batch 0":          func(p *shard.AssignParams) { p.GlobalBatch = 0 },
		"step past epoch":  func(p *shard.AssignParams) { p.Step = shard.BatchesPerEpoch(c.n(), 4) },
		"no shards":        func(p *shard.AssignParams) { p.Shards = nil },
	} {
		p := base
		change(&p)
		if _, err := shard.Assign(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// newMathRand is the seeded math/rand source testing/quick needs.
func newMathRand(seed int64) *mathrand.Rand { return mathrand.New(mathrand.NewSource(seed)) }
