package node

import (
	"context"
	"time"
)

// Scrubbing: re-hashing the shards a node holds, so that a bad one is never
// trained on or served.

// scrubEvery is how often a node re-hashes the shards it holds.
const scrubEvery = time.Hour

// Scrub re-hashes every object of a registered dataset that this node
// holds and deletes the ones whose bytes no longer match their name (a
// disk that flipped bits, a file edited by hand): the fetch loop then
// copies them again from another replica, so a bad shard is never trained
// on and never served. It returns the hashes it deleted.
func (n *Node) Scrub(ctx context.Context) ([]string, error) {
	var bad []string
	for _, d := range n.coord.State().Datasets {
		objs := []string{d.Manifest}
		for _, s := range d.Shards {
			objs = append(objs, s.Hash)
		}
		for _, h := range objs {
			if ctx.Err() != nil {
				return bad, ctx.Err()
			}
			if !n.store.Has(h) {
				continue
			}
			got, err := n.objectHash(h)
			if err != nil {
				return bad, err
			}
			if got == h {
				continue
			}
			if d.Local && d.Source == n.cfg.Name {
				// The only copy: keep it for the operator to inspect;
				// training reads verify every shard and refuse it.
				n.log.Error("a shard of a local dataset is corrupt and has no replica", "dataset", d.Name, "shard", h[:12])
				continue
			}
			n.log.Warn("corrupt shard deleted; it will be fetched again from a replica", "dataset", d.Name, "shard", h[:12], "hash_now", got[:12])
			if err := n.store.Delete(h); err != nil {
				return bad, err
			}
			bad = append(bad, h)
		}
	}
	if len(bad) > 0 {
		n.kickData()
	}
	return bad, nil
}
