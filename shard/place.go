package shard

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// DefaultReplication is the number of nodes that hold each shard of a
// shared dataset unless a job says otherwise.
const DefaultReplication = 2

// ErrCapacity: the nodes cannot hold the copies asked for.
var ErrCapacity = errors.New("shard: not enough capacity")

// ShardRef is what placement needs to know of a shard.
type ShardRef struct {
	Hash  string
	Bytes int64 // file size
}

// NodeCap is a node that can hold shards, and how many bytes of them.
type NodeCap struct {
	ID            string
	CapacityBytes int64
}

// Placement maps a shard's hash to the IDs of the nodes that hold it, most
// preferred first.
type Placement map[string][]string

// Place decides which nodes hold each shard of a shared dataset: r distinct
// nodes per shard (r is capped at the number of nodes with capacity), by
// weighted rendezvous (highest-random-weight) hashing.
//
// Every (shard, node) pair gets a score, capacity / -ln(u), where u in
// (0, 1) comes from SHA-256(shard hash, 0, node ID). A shard goes to the r
// nodes with the highest scores that still have room for it; a node's
// chance to rank first is proportional to its capacity, so larger nodes
// get proportionally more. Because a pair's score does not depend on the
// other nodes, adding a node moves only shards whose new top r include
// it, and removing one moves only shards it held — as long as capacity
// does not bind. Where a node is full, the shard goes to the next node in
// its ranking: shards are placed largest first (then by hash), so the
// result stays deterministic, but then one change may move other shards.
//
// A node's assigned bytes never exceed its capacity. Place fails with
// ErrCapacity when all nodes together cannot hold r copies, or when one
// shard finds no r nodes with room. It is a pure function: the same
// arguments give the same placement, whatever their order. (Scores use
// floating point; the coordinator's leader computes a placement once and
// commits it, so no two machines need to agree on them.)
func Place(shards []ShardRef, nodes []NodeCap, r int) (Placement, error) {
	if r < 1 {
		return nil, fmt.Errorf("shard: replication factor %d, want ≥ 1", r)
	}
	if err := checkShardRefs(shards); err != nil {
		return nil, err
	}
	var eligible []NodeCap
	var capacity int64
	seen := map[string]bool{}
	for _, n := range nodes {
		switch {
		case n.ID == "":
			return nil, errors.New("shard: a node with an empty ID")
		case seen[n.ID]:
			return nil, fmt.Errorf("shard: node %q listed twice", n.ID)
		case n.CapacityBytes < 0:
			return nil, fmt.Errorf("shard: node %q has capacity %d", n.ID, n.CapacityBytes)
		}
		seen[n.ID] = true
		if n.CapacityBytes > 0 {
			eligible = append(eligible, n)
			capacity += n.CapacityBytes
		}
	}
	if len(shards) == 0 {
		return Placement{}, nil
	}
	if len(eligible) == 0 {
		return nil, fmt.Errorf("%w: no node has capacity (%d nodes)", ErrCapacity, len(nodes))
	}
	r = min(r, len(eligible))
	var need int64
	for _, s := range shards {
		need += int64(r) * s.Bytes
	}
	if need > capacity {
		return nil, fmt.Errorf("%w: %d copies of %d shards need %d bytes, the %d nodes have %d", ErrCapacity, r, len(shards), need, len(eligible), capacity)
	}

	order := slices.Clone(shards)
	slices.SortFunc(order, func(a, b ShardRef) int {
		if c := cmp.Compare(b.Bytes, a.Bytes); c != 0 {
			return c // largest first
		}
		return strings.Compare(a.Hash, b.Hash)
	})
	used := make(map[string]int64, len(eligible))
	ranked := make([]scoredNode, len(eligible))
	out := make(Placement, len(shards))
	for _, s := range order {
		for i, n := range eligible {
			ranked[i] = scoredNode{n, rendezvousScore(s.Hash, n)}
		}
		slices.SortFunc(ranked, func(a, b scoredNode) int {
			if c := cmp.Compare(b.score, a.score); c != 0 {
				return c // highest first
			}
			return strings.Compare(a.node.ID, b.node.ID)
		})
		holders := make([]string, 0, r)
		for _, c := range ranked {
			if used[c.node.ID]+s.Bytes <= c.node.CapacityBytes {
				holders = append(holders, c.node.ID)
				used[c.node.ID] += s.Bytes
				if len(holders) == r {
					break
				}
			}
		}
		if len(holders) < r {
			return nil, fmt.Errorf("%w: shard %s (%d bytes) fits on %d nodes, %d copies needed", ErrCapacity, s.Hash, s.Bytes, len(holders), r)
		}
		out[s.Hash] = holders
	}
	return out, nil
}

// PlaceLocal places every shard of a local (federated) dataset on its
// owner only: the data never leaves that node.
func PlaceLocal(shards []ShardRef, owner string) (Placement, error) {
	if owner == "" {
		return nil, errors.New("shard: local dataset without an owner")
	}
	if err := checkShardRefs(shards); err != nil {
		return nil, err
	}
	out := make(Placement, len(shards))
	for _, s := range shards {
		out[s.Hash] = []string{owner}
	}
	return out, nil
}

func checkShardRefs(shards []ShardRef) error {
	seen := make(map[string]bool, len(shards))
	for _, s := range shards {
		switch {
		case s.Hash == "":
			return errors.New("shard: a shard with an empty hash")
		case seen[s.Hash]:
			return fmt.Errorf("shard: shard %s listed twice", s.Hash)
		case s.Bytes < 0:
			return fmt.Errorf("shard: shard %s has %d bytes", s.Hash, s.Bytes)
		}
		seen[s.Hash] = true
	}
	return nil
}

type scoredNode struct {
	node  NodeCap
	score float64
}

// rendezvousScore is the weighted rendezvous score of node for a shard:
// capacity / -ln(u), u uniform in (0, 1) from SHA-256(hash, 0, node ID).
// The top-ranked node is node i with probability capacity_i / Σ capacity.
func rendezvousScore(hash string, n NodeCap) float64 {
	h := sha256.New()
	h.Write([]byte(hash))
	h.Write([]byte{0})
	h.Write([]byte(n.ID))
	var sum [sha256.Size]byte
	x := binary.BigEndian.Uint64(h.Sum(sum[:0]))
	u := (float64(x>>11) + 0.5) / (1 << 53) // in (0, 1): never 0 or 1
	return float64(n.CapacityBytes) / -math.Log(u)
}
