package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"testing"
)

// st is a frozen status at step done with weights hash h, keeping the
// reduced gradient of step reduced (-1: none).
func st(done int, h string, reduced int) syncStatus {
	return syncStatus{Ready: true, Done: done, Hash: h, Reduced: reduced, Placement: 1}
}

// TestPlanSync: the sync decision, from injected statuses, for every case
// a ring change produces.
func TestPlanSync(t *testing.T) {
	ring := []string{"a", "b", "c"}
	for _, c := range []struct {
		name     string
		self     string
		statuses map[string]syncStatus
		want     syncPlan
		err      string
	}{
		{"all in step", "b",
			map[string]syncStatus{"a": st(7, "H", 6), "b": st(7, "H", 6), "c": st(7, "H", 6)},
			syncPlan{Target: 7, Ref: "a", RefHash: "H", InStep: true}, ""},
		{"one behind, gradients kept", "b",
			map[string]syncStatus{"a": st(7, "H", 6), "b": st(6, "G", 5), "c": st(7, "H", 6)},
			syncPlan{Target: 7, Ref: "a", RefHash: "H", GradFrom: []string{"a", "c"}, SnapshotFrom: []string{"a", "c"}}, ""},
		{"one behind, only one kept the gradient", "b",
			map[string]syncStatus{"a": st(7, "H", -1), "b": st(6, "G", 5), "c": st(7, "H", 6)},
			syncPlan{Target: 7, Ref: "a", RefHash: "H", GradFrom: []string{"c"}, SnapshotFrom: []string{"a", "c"}}, ""},
		{"one behind, nobody kept the gradient", "b",
			map[string]syncStatus{"a": st(7, "H", -1), "b": st(6, "G", 5), "c": st(7, "H", 5)},
			syncPlan{Target: 7, Ref: "a", RefHash: "H", SnapshotFrom: []string{"a", "c"}}, ""},
		{"two behind: snapshot only", "c",
			map[string]syncStatus{"a": st(9, "H", 8), "b": st(9, "H", 8), "c": st(7, "G", 6)},
			syncPlan{Target: 9, Ref: "a", RefHash: "H", SnapshotFrom: []string{"a", "b"}}, ""},
		{"at the target with other weights: snapshot of the reference", "b",
			map[string]syncStatus{"a": st(7, "H", 6), "b": st(7, "X", 6), "c": st(7, "H", 6)},
			syncPlan{Target: 7, Ref: "a", RefHash: "H", SnapshotFrom: []string{"a", "c"}}, ""},
		{"the reference is the first at the target in ring order, not the first alive", "a",
			map[string]syncStatus{"a": st(5, "F", 4), "b": st(6, "H2", 5), "c": st(6, "H3", 5)},
			syncPlan{Target: 6, Ref: "b", RefHash: "H2", GradFrom: []string{"b"}, SnapshotFrom: []string{"b"}}, ""},
		{"the reference itself is in step", "a",
			map[string]syncStatus{"a": st(6, "H", 5), "b": st(5, "G", 4), "c": st(6, "X", 5)},
			syncPlan{Target: 6, Ref: "a", RefHash: "H", InStep: true}, ""},
		{"a member at the target with other weights is no source", "b",
			map[string]syncStatus{"a": st(6, "H", 5), "b": st(5, "G", 4), "c": st(6, "X", 5)},
			syncPlan{Target: 6, Ref: "a", RefHash: "H", GradFrom: []string{"a"}, SnapshotFrom: []string{"a"}}, ""},
		{"placement differs: the newest any member saw", "a",
			map[string]syncStatus{"a": st(6, "H", 5), "b": {Ready: true, Done: 6, Hash: "H", Reduced: 5, Placement: 2}, "c": st(6, "H", 5)},
			syncPlan{Target: 6, Ref: "a", RefHash: "H", InStep: true, Placement: 2}, ""},
		{"a member's status missing", "a",
			map[string]syncStatus{"a": st(6, "H", 5), "b": st(6, "H", 5)},
			syncPlan{}, "no status of member c"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := planSync(c.self, ring, c.statuses)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.want.Placement == 0 {
				c.want.Placement = 1 // st's
			}
			if got.Target != c.want.Target || got.Ref != c.want.Ref || got.RefHash != c.want.RefHash || got.InStep != c.want.InStep || got.Placement != c.want.Placement ||
				!slices.Equal(got.GradFrom, c.want.GradFrom) || !slices.Equal(got.SnapshotFrom, c.want.SnapshotFrom) {
				t.Fatalf("plan %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// fakeWorker is a catchUpper whose peers' gradients and snapshots are
// scripted: a source either fails, or moves the worker to a step and hash.
type fakeWorker struct {
	done  int
	hash  string
	grads map[string]fakeSource // by peer
	snaps map[string]fakeSource
	tried []string
}

type fakeSource struct {
	err  error
	done int
	hash string
}

func (f *fakeWorker) Done() int    { return f.done }
func (f *fakeWorker) Hash() string { return f.hash }
func (f *fakeWorker) Grad(_ context.Context, peer string, step int) error {
	f.tried = append(f.tried, fmt.Sprintf("grad %d from %s", step, peer))
	return f.apply(f.grads[peer])
}
func (f *fakeWorker) Snapshot(_ context.Context, peer string) error {
	f.tried = append(f.tried, "snapshot from "+peer)
	return f.apply(f.snaps[peer])
}
func (f *fakeWorker) apply(s fakeSource) error {
	if s.err != nil {
		return s.err
	}
	if s.hash == "" {
		return errors.New("nothing scripted")
	}
	f.done, f.hash = s.done, s.hash
	return nil
}

// TestCatchUp: the catch-up paths, with sources that fail or give wrong
// weights, in the order they are tried.
func TestCatchUp(t *testing.T) {
	r := &jobRunner{n: &Node{log: slog.New(slog.NewTextHandler(io.Discard, nil))}, id: "job-1"}
	plan := syncPlan{Target: 7, Ref: "a", RefHash: "H", GradFrom: []string{"a", "c"}, SnapshotFrom: []string{"a", "c"}}
	down := errors.New("connection refused")
	for _, c := range []struct {
		name  string
		grads map[string]fakeSource
		snaps map[string]fakeSource
		tried []string
		err   []string // substrings of the error; nil: success
	}{
		{"the first gradient", map[string]fakeSource{"a": {done: 7, hash: "H"}}, nil,
			[]string{"grad 6 from a"}, nil},
		{"the first source down, the second's gradient",
			map[string]fakeSource{"a": {err: down}, "c": {done: 7, hash: "H"}}, nil,
			[]string{"grad 6 from a", "grad 6 from c"}, nil},
		{"a gradient that gives other weights: the reference's snapshot, not another gradient",
			map[string]fakeSource{"a": {done: 7, hash: "X"}, "c": {done: 7, hash: "H"}},
			map[string]fakeSource{"a": {done: 7, hash: "H"}},
			[]string{"grad 6 from a", "snapshot from a"}, nil},
		{"no gradient to be had: snapshots in order",
			map[string]fakeSource{"a": {err: down}, "c": {err: down}},
			map[string]fakeSource{"a": {err: down}, "c": {done: 7, hash: "H"}},
			[]string{"grad 6 from a", "grad 6 from c", "snapshot from a", "snapshot from c"}, nil},
		{"a snapshot at the wrong step is not taken",
			map[string]fakeSource{"a": {err: down}, "c": {err: down}},
			map[string]fakeSource{"a": {done: 5, hash: "H"}, "c": {done: 7, hash: "H"}},
			[]string{"grad 6 from a", "grad 6 from c", "snapshot from a", "snapshot from c"}, nil},
		{"everything fails: every reason named",
			map[string]fakeSource{"a": {err: down}, "c": {err: down}},
			map[string]fakeSource{"a": {err: down}, "c": {done: 7, hash: "Z"}},
			[]string{"grad 6 from a", "grad 6 from c", "snapshot from a", "snapshot from c"},
			[]string{"sync of epoch 3: cannot reach step 7", "reduced gradient from a: connection refused",
				"reduced gradient from c", "snapshot from a: connection refused", "the snapshot from c is at step 7, want 7 with weights H"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := &fakeWorker{done: 6, hash: "G", grads: c.grads, snaps: c.snaps}
			err := r.catchUp(context.Background(), 3, plan, w)
			if !slices.Equal(w.tried, c.tried) {
				t.Errorf("tried %q, want %q", w.tried, c.tried)
			}
			if c.err == nil {
				if err != nil || w.done != 7 || w.hash != "H" {
					t.Fatalf("err %v, at step %d with %s; want step 7 with H", err, w.done, w.hash)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range c.err {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
	// In step: nothing is fetched.
	w := &fakeWorker{done: 7, hash: "H"}
	if err := r.catchUp(context.Background(), 3, syncPlan{Target: 7, Ref: "a", RefHash: "H", InStep: true}, w); err != nil || len(w.tried) != 0 {
		t.Fatalf("in step: %v, tried %q", err, w.tried)
	}
	// No source at all (every other member is out of step too).
	if err := r.catchUp(context.Background(), 3, syncPlan{Target: 7, Ref: "a", RefHash: "H"}, &fakeWorker{done: 6, hash: "G"}); err == nil ||
		!strings.Contains(err.Error(), "no member in step") {
		t.Fatalf("no source: %v", err)
	}
}

// TestGradsRoundTrip: a reduced-gradient object decodes to what was
// encoded, NaN and infinities bit for bit, and wrong lengths are refused.
func TestGradsRoundTrip(t *testing.T) {
	g := []float32{1, -2.5, float32(math.Inf(1)), float32(math.NaN()), 0}
	b := encodeGrads(41, g)
	step, got, err := decodeGrads(b, len(g))
	if err != nil || step != 41 || len(got) != len(g) {
		t.Fatalf("step %d, %d values, %v", step, len(got), err)
	}
	for i := range g {
		if math.Float32bits(got[i]) != math.Float32bits(g[i]) {
			t.Errorf("value %d: %v, want %v", i, got[i], g[i])
		}
	}
	for _, bad := range [][]byte{nil, b[:15], b[:len(b)-1], append(slices.Clone(b), 0), append([]byte("XRDG"), b[4:]...)} {
		if _, _, err := decodeGrads(bad, len(g)); err == nil {
			t.Errorf("decoded %d bytes", len(bad))
		}
	}
	if _, _, err := decodeGrads(b, len(g)+1); err == nil {
		t.Error("decoded a gradient of another length")
	}
}

// FuzzDecodeGrads: a peer's reduced-gradient object never panics the
// decoder, and what decodes re-encodes to the same bytes.
func FuzzDecodeGrads(f *testing.F) {
	f.Add(encodeGrads(3, []float32{1, 2, 3}), 3)
	f.Add(encodeGrads(0, nil), 0)
	f.Add([]byte("BRDG\xff\xff\xff\xff\xff\xff\xff\xff\x03\x00\x00\x00"), 3)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		step, g, err := decodeGrads(b, n)
		if err != nil {
			return
		}
		if back := encodeGrads(step, g); string(back) != string(b) {
			t.Fatalf("re-encoded %x, decoded from %x", back, b)
		}
	})
}

// dilocoCheckpointDue is a function of the step: the first outer boundary
// at or past each multiple of the checkpoint interval, whoever is rank 0.
func TestDiLoCoCheckpointDue(t *testing.T) {
	for _, c := range []struct {
		h, every int
		want     []int // due boundaries up to 30
	}{
		{4, 8, []int{8, 16, 24}},
		{3, 8, []int{9, 18, 24}},
		{10, 5, []int{10, 20, 30}},
		{4, 0, nil},
	} {
		var got []int
		for b := c.h; b <= 30; b += c.h {
			if dilocoCheckpointDue(b, c.h, c.every) {
				got = append(got, b)
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("H=%d every %d: due at %v, want %v", c.h, c.every, got, c.want)
		}
	}
}
