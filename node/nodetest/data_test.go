package nodetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/node/blobstore"
	"github.com/braidml/braid/shard"
	"github.com/braidml/braid/transport"
)

// prepareDataset writes docs text documents and prepares them as a dataset
// with small shards (several per dataset); it returns the dataset directory.
func prepareDataset(t *testing.T, name string, docs int) (string, *shard.Manifest) {
	t.Helper()
	return prepareDatasetWith(t, name, docs, model.ByteTokenizer{}, 64)
}

// prepareDatasetWith is prepareDataset with tokenizer tok (as `braid data
// prepare --tokenizer` gives it) and sequences of seqLen tokens.
func prepareDatasetWith(t *testing.T, name string, docs int, tok model.Tokenizer, seqLen int) (string, *shard.Manifest) {
	t.Helper()
	in := filepath.Join(t.TempDir(), name)
	os.MkdirAll(in, 0o755)
	for i := range docs {
		text := strings.Repeat(fmt.Sprintf("%s document %d says something about the matter at hand. ", name, i), 40)
		if err := os.WriteFile(filepath.Join(in, fmt.Sprintf("doc%03d.txt", i)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := shard.DefaultConfig()
	cfg.Inputs, cfg.Out, cfg.Tokenizer = []string{in}, filepath.Join(t.TempDir(), name+"-ds"), tok
	cfg.SeqLen, cfg.ShardBytes, cfg.Holdout = seqLen, 8<<10, 0.1
	res, err := shard.Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res.Dir, res.Manifest
}

// waitHealthy waits until, seen from name, every shard of dataset has its
// replicas on live holders and check holds.
func waitHealthy(c *Cluster, name, dataset string, check func(node.DatasetStatus) bool) node.DatasetStatus {
	var st node.DatasetStatus
	c.waitFor(dataset+" fully replicated", func() bool {
		var err error
		st, err = c.Node(name).DatasetStatus(context.Background(), dataset)
		return err == nil && st.UnderReplicated == 0 && len(st.Placement) == len(st.Shards) && check(st)
	})
	return st
}

// heldAsPlaced: every shard is held by (at least) its placed holders.
func heldAsPlaced(st node.DatasetStatus) bool {
	for h, holders := range st.Placement {
		for _, m := range holders {
			if !slices.Contains(st.Held[h], m) {
				return false
			}
		}
	}
	return true
}

// A dataset pushed on a follower is registered through the leader, placed
// with r = 2 replicas, and pulled by every holder; when a holder dies the
// leader re-places its shards and the new holders pull them from the
// surviving replicas, so every shard has two live copies again.
func TestDatasetPlacedReplicatedAndRepaired(t *testing.T) {
	c := NewCluster(t, 4)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 4 })
	dir, m := prepareDataset(t, "legal", 60)
	if len(m.Shards) < 4 {
		t.Fatalf("want several shards, got %d", len(m.Shards))
	}
	leader := c.WaitLeader()
	pusher := "n1"
	if leader == pusher {
		pusher = "n2"
	}
	d, err := c.PushDataset(pusher, dir, node.DatasetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != m.ID || d.Name != "legal" || d.Replicas != 2 {
		t.Fatalf("registered %+v", d)
	}
	st := waitHealthy(c, leader, "legal", heldAsPlaced)
	for h, holders := range st.Placement {
		if len(holders) != 2 {
			t.Fatalf("shard %s placed on %v, want 2 holders", h[:12], holders)
		}
	}
	// Kill a holder other than the leader and the pusher: its shards are
	// re-replicated from the survivors.
	var victim string
	for _, name := range []string{"n1", "n2", "n3", "n4"} {
		if name != leader && name != pusher {
			victim = name
			break
		}
	}
	c.Kill(victim)
	st = waitHealthy(c, leader, "legal", func(st node.DatasetStatus) bool {
		for _, holders := range st.Placement {
			if slices.Contains(holders, victim) {
				return false
			}
		}
		return heldAsPlaced(st)
	})
	t.Logf("after %s died: placement version %d, %d shards healthy", victim, st.PlacementVersion, st.Healthy)
	// Re-registering the same directory is a no-op; a different dataset
	// under the same name is refused.
	if _, err := c.PushDataset(pusher, dir, node.DatasetOptions{}); err != nil {
		t.Errorf("registering the same dataset again: %v", err)
	}
	other, _ := prepareDataset(t, "other", 5)
	if _, err := c.PushDataset(pusher, other, node.DatasetOptions{Name: "legal"}); err == nil || !strings.Contains(err.Error(), "taken") {
		t.Errorf("a second dataset named legal: %v", err)
	}
}

// A local (federated) dataset stays on its node: it is placed there only,
// no peer holds any of it, the node's server has sent zero bytes of it,
// and a peer that asks for a shard directly is refused.
func TestLocalDatasetNeverLeavesItsNode(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	dir, m := prepareDataset(t, "bio", 30)
	owner := c.Node("n2")
	d, err := c.PushDataset("n2", dir, node.DatasetOptions{Local: true})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Local || d.Replicas != 1 {
		t.Fatalf("registered %+v", d)
	}
	// A shared dataset at the same time, so that the nodes do fetch.
	sharedDir, shared := prepareDataset(t, "legal", 20)
	if _, err := c.PushDataset("n1", sharedDir, node.DatasetOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	waitHealthy(c, "n3", "legal", heldAsPlaced)
	st := waitHealthy(c, "n1", "bio", heldAsPlaced)
	for h, holders := range st.Placement {
		if !slices.Equal(holders, []string{"n2"}) || !slices.Equal(st.Held[h], []string{"n2"}) {
			t.Fatalf("local shard %s placed on %v, held by %v", h[:12], holders, st.Held[h])
		}
	}
	// A peer asking for a shard directly is refused by the serving side.
	h := m.Shards[0].Hash
	err = c.Node("n3").Store().Fetch(context.Background(), c.Node("n3").Transport(), transport.ProtoShard,
		[]blobstore.Source{{Peer: "n2", Addr: "mem:n2"}}, h, blobstore.SizeUnknown, blobstore.FetchOptions{})
	if !errors.Is(err, blobstore.ErrRefused) {
		t.Errorf("direct fetch of a local shard: %v, want refused", err)
	}
	for _, e := range append(m.Shards, shard.ShardEntry{Hash: d.Manifest}) {
		if n := owner.ShardServer().BytesServed(e.Hash); n != 0 {
			t.Errorf("the owner served %d bytes of %s", n, e.Hash[:12])
		}
		for _, peer := range []string{"n1", "n3"} {
			if c.Node(peer).Store().Has(e.Hash) {
				t.Errorf("%s holds %s of the local dataset", peer, e.Hash[:12])
			}
		}
	}
	// The shared dataset did travel (r = 3 on 3 nodes): the same counters
	// saw its bytes, so the zeros above are not a counter that never moves.
	var served int64
	for _, name := range []string{"n1", "n2", "n3"} {
		served += c.Node(name).ShardServer().Stats().BytesServed
	}
	var sharedBytes int64
	for _, e := range shared.Shards {
		sharedBytes += e.Bytes
	}
	if served < 2*sharedBytes {
		t.Errorf("%d bytes served in all, want at least the 2 copies of the shared dataset (%d bytes each)", served, sharedBytes)
	}
}

// A shard whose bytes went bad on a holder's disk is found by Scrub,
// deleted, and copied again from the other replica.
func TestCorruptShardIsRefetchedFromAReplica(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	dir, _ := prepareDataset(t, "jargon", 20)
	if _, err := c.PushDataset("n1", dir, node.DatasetOptions{}); err != nil {
		t.Fatal(err)
	}
	st := waitHealthy(c, "n1", "jargon", heldAsPlaced)
	// Corrupt one shard on one of its holders.
	var victim, h string
	for hash, holders := range st.Placement {
		victim, h = holders[0], hash
		break
	}
	path, err := c.Node(victim).Store().Path(h)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 0xff
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	bad, err := c.Node(victim).Scrub(context.Background())
	if err != nil || !slices.Equal(bad, []string{h}) {
		t.Fatalf("Scrub on %s: %v, %v; want [%s]", victim, bad, err, h[:12])
	}
	waitHealthy(c, "n1", "jargon", heldAsPlaced)
	if got, _ := os.ReadFile(path); blobstore.Sum(got) != h {
		t.Fatalf("%s's copy of %s was not repaired", victim, h[:12])
	}
}
