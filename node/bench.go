package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/transport"
)

// BenchPlan is one all-reduce benchmark across the cluster's members
// (`braid bench allreduce --api`).
type BenchPlan struct {
	Sizes      []int         `json:"sizes"` // bytes of fp32 per all-reduce
	Dtype      string        `json:"dtype"` // wire type
	Iters      int           `json:"iters"` // timed iterations per size
	Streams    int           `json:"streams,omitempty"`
	ChunkBytes int           `json:"chunk_bytes,omitempty"`
	HopTimeout time.Duration `json:"hop_timeout,omitempty"`
}

// Limits on a BenchPlan, so that a request cannot tie a node up for long.
const (
	maxBenchSizes = 32
	maxBenchBytes = 1 << 30
	maxBenchIters = 1000
)

// ringConfig checks the plan and turns it into the ring's configuration.
func (p BenchPlan) ringConfig() (allreduce.Config, error) {
	cfg := allreduce.DefaultConfig()
	var err error
	if cfg.Dtype, err = allreduce.ParseDtype(p.Dtype); err != nil {
		return cfg, err
	}
	if p.Streams != 0 {
		cfg.Streams = p.Streams
	}
	if p.ChunkBytes != 0 {
		cfg.ChunkBytes = p.ChunkBytes
	}
	if p.HopTimeout != 0 {
		cfg.HopTimeout = p.HopTimeout
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	if len(p.Sizes) == 0 || len(p.Sizes) > maxBenchSizes {
		return cfg, fmt.Errorf("node: bench plan with %d sizes, want 1..%d", len(p.Sizes), maxBenchSizes)
	}
	for _, b := range p.Sizes {
		if b < 4 || b > maxBenchBytes {
			return cfg, fmt.Errorf("node: bench size %d bytes, want 4..%d", b, maxBenchBytes)
		}
	}
	if p.Iters < 1 || p.Iters > maxBenchIters {
		return cfg, fmt.Errorf("node: bench iters %d, want 1..%d", p.Iters, maxBenchIters)
	}
	return cfg, nil
}

// benchRequest asks a member to run its rank of a benchmark ring.
type benchRequest struct {
	ID   string             `json:"id"` // names the run in logs
	Ring []allreduce.Member `json:"ring"`
	Plan BenchPlan          `json:"plan"`
}

func (r *benchRequest) validate() error {
	if len(r.Ring) < 1 || len(r.Ring) > 1024 {
		return fmt.Errorf("node: bench ring of %d members", len(r.Ring))
	}
	_, err := r.Plan.ringConfig()
	return err
}

// benchReply is a member's figures, one row per size.
type benchReply struct {
	Rows []allreduce.BenchRow `json:"rows"`
}

// ErrBenchBusy is returned while this node already runs a benchmark ring.
var ErrBenchBusy = errors.New("node: a benchmark ring is already running here")

// BenchAllreduce runs plan across the members of the committed epoch, in
// the epoch's ring order rotated so that this node is rank 0, and calls emit
// with this node's row after each size (rank 0's figures are the ring's).
// Every other member runs its rank on a control request; an error names the
// member that failed.
func (n *Node) BenchAllreduce(ctx context.Context, plan BenchPlan, emit func(allreduce.BenchRow)) error {
	if _, err := plan.ringConfig(); err != nil {
		return err
	}
	st := n.Status()
	self := slices.Index(st.Ring, n.cfg.Name)
	if self < 0 {
		return fmt.Errorf("node: %s is not in the committed epoch %d (%v); ask a member", n.cfg.Name, st.Epoch.ID, st.Ring)
	}
	addr := map[string]string{}
	for _, m := range st.Members {
		if m.State == "alive" {
			addr[m.Name] = m.QUICAddr
		}
	}
	var ring []allreduce.Member
	for i := range st.Ring {
		name := st.Ring[(self+i)%len(st.Ring)]
		if addr[name] == "" {
			return fmt.Errorf("node: epoch member %s is not alive in the gossip view", name)
		}
		ring = append(ring, allreduce.Member{ID: transport.PeerID(name), Addr: addr[name]})
	}
	var id [6]byte
	rand.Read(id[:])
	req := benchRequest{ID: hex.EncodeToString(id[:]), Ring: ring, Plan: plan}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, m := range ring[1:] {
		wg.Go(func() {
			resp, err := n.callControl(ctx, string(m.ID), m.Addr, controlRequest{Op: opBenchAllreduce, Bench: &req})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel() // the ring is broken: stop our rank too
				return
			}
			// The rows printed are this rank's; every other rank checked
			// its own result too, and a wrong element anywhere fails the
			// run, naming the rank.
			if resp.Bench != nil {
				for _, row := range resp.Bench.Rows {
					if row.Wrong != 0 {
						mu.Lock()
						errs = append(errs, fmt.Errorf("node %s: %d wrong elements in the %d-byte all-reduces", m.ID, row.Wrong, row.Bytes))
						mu.Unlock()
					}
				}
			}
		})
	}
	_, err := n.runBench(ctx, req, emit)
	if err != nil {
		cancel()
	}
	wg.Wait()
	// A member's own error names the root cause better than the ring error
	// it caused here.
	return errors.Join(append(errs, err)...)
}

// runBench runs this node's rank of req.Ring; emit, when not nil, gets each
// row as it is measured.
func (n *Node) runBench(ctx context.Context, req benchRequest, emit func(allreduce.BenchRow)) ([]allreduce.BenchRow, error) {
	cfg, err := req.Plan.ringConfig()
	if err != nil {
		return nil, err
	}
	// One ring at a time: a ring listens on transport.ProtoRing.
	if !n.ringMu.TryLock() {
		return nil, ErrBenchBusy
	}
	defer n.ringMu.Unlock()
	n.log.Info("bench all-reduce", "run", req.ID, "ranks", len(req.Ring), "dtype", cfg.Dtype, "sizes", req.Plan.Sizes)
	ring, err := allreduce.NewRing(cfg, n.tr, req.Ring)
	if err != nil {
		return nil, err
	}
	var rows []allreduce.BenchRow
	for _, b := range req.Plan.Sizes {
		row, err := allreduce.BenchSize(ctx, ring, b, req.Plan.Iters)
		if err != nil {
			ring.Close()
			return rows, fmt.Errorf("node %s: bench run %s: %w", n.cfg.Name, req.ID, err)
		}
		rows = append(rows, row)
		if emit != nil {
			emit(row)
		}
	}
	dctx, dcancel := context.WithTimeout(ctx, cfg.HopTimeout)
	defer dcancel()
	if err := ring.Drain(dctx); err != nil {
		return rows, fmt.Errorf("node %s: bench run %s: %w", n.cfg.Name, req.ID, err)
	}
	return rows, nil
}
