package node

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/braidml/braid/allreduce"
)

func TestDecodeControlRequest(t *testing.T) {
	good, _ := json.Marshal(controlRequest{Op: opBenchAllreduce, Bench: &benchRequest{ID: "x",
		Ring: []allreduce.Member{{ID: "a", Addr: "mem:a"}}, Plan: BenchPlan{Sizes: []int{1024}, Dtype: "fp32", Iters: 1}}})
	if _, err := decodeControlRequest(good); err != nil {
		t.Fatalf("valid request refused: %v", err)
	}
	for name, b := range map[string]string{
		"not json":      "{",
		"unknown op":    `{"op":"format-disk"}`,
		"missing bench": `{"op":"bench-allreduce"}`,
		"empty ring":    `{"op":"bench-allreduce","bench":{"ring":[],"plan":{"sizes":[1024],"dtype":"fp32","iters":1}}}`,
		"bad dtype":     `{"op":"bench-allreduce","bench":{"ring":[{"ID":"a"}],"plan":{"sizes":[1024],"dtype":"fp64","iters":1}}}`,
		"huge size":     `{"op":"bench-allreduce","bench":{"ring":[{"ID":"a"}],"plan":{"sizes":[99999999999],"dtype":"fp32","iters":1}}}`,
		"no iters":      `{"op":"bench-allreduce","bench":{"ring":[{"ID":"a"}],"plan":{"sizes":[1024],"dtype":"fp32","iters":0}}}`,
		"no member":     `{"op":"force-leave","force_leave":{"name":""}}`,
	} {
		if _, err := decodeControlRequest([]byte(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzDecodeControlRequest: any bytes give a valid request or an error,
// never a panic; an accepted request is within the plan limits.
func FuzzDecodeControlRequest(f *testing.F) {
	good, _ := json.Marshal(controlRequest{Op: opBenchAllreduce, Bench: &benchRequest{ID: "x",
		Ring: []allreduce.Member{{ID: "a", Addr: "mem:a"}, {ID: "b", Addr: "mem:b"}},
		Plan: BenchPlan{Sizes: []int{1024, 4096}, Dtype: "int8", Iters: 3, HopTimeout: time.Second}}})
	f.Add(good)
	f.Add([]byte(`{"op":"bench-allreduce","bench":{"ring":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeControlRequest(b)
		if err != nil {
			return
		}
		if req.Op != opBenchAllreduce || req.Bench == nil {
			t.Fatalf("accepted %+v", req)
		}
		for _, s := range req.Bench.Plan.Sizes {
			if s < 4 || s > maxBenchBytes {
				t.Fatalf("accepted size %d", s)
			}
		}
	})
}

// TestControlOpsDeclared: every operation of the protocol is declared once
// with its sender's role, its request check and its answer.
func TestControlOpsDeclared(t *testing.T) {
	ops := []string{opBenchAllreduce, opApply, opInventory, opFetch, opRenewEpoch, opJobSync, opJobGrad, opJobSnapshot, opJobProgress, opJobHistory, opForceLeave}
	if len(controlOps) != len(ops) {
		t.Errorf("%d operations declared, %d named", len(controlOps), len(ops))
	}
	for _, name := range ops {
		op, ok := controlOps[name]
		if !ok || op.check == nil || op.serve == nil {
			t.Errorf("operation %s: declared %v, check %v, serve %v", name, ok, op.check != nil, op.serve != nil)
		}
	}
}
