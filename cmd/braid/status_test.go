package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/node"
)

func TestStatusCommand(t *testing.T) {
	st := node.Status{Self: "n1", Leader: "n2", Term: 3, Epoch: node.EpochStatus{ID: 7, Members: []string{"n1", "n2", "n3"}},
		Members: []node.MemberStatus{{Name: "n1", State: "alive", Addr: "127.0.0.1:7946"}, {Name: "n3", State: "dead", Addr: "127.0.0.1:7948"},
			{Name: "g1", State: "alive", Addr: "10.0.0.9:7946", Device: "cuda", GPUs: 8,
				GPU: &cuda.DeviceInfo{Index: 3, Name: "NVIDIA H200", MemoryBytes: 150754820096, Major: 9, SMs: 132}},
			{Name: "c1", State: "alive", Addr: "10.0.0.8:7946", Device: "cpu", GPUs: 2}}}
	const token = "status-test-token"
	api, err := node.StartAPI(node.APIConfig{Addr: "127.0.0.1:0", Token: token}, func() node.Status { return st }, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close(context.Background())
	t.Setenv("BRAID_TOKEN", token)
	out, err := run(t, "status", "--api", "http://"+api.Addr(), "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got node.Status
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Leader != "n2" || got.Epoch.ID != 7 || len(got.Members) != 4 ||
		got.Members[2].Device != "cuda" || got.Members[2].GPU == nil || *got.Members[2].GPU != *st.Members[2].GPU {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, key := range []string{`"self"`, `"leader"`, `"term"`, `"epoch"`, `"members"`, `"state"`, `"addr"`, `"device"`, `"gpu"`} {
		if !strings.Contains(out, key) {
			t.Errorf("status --json lacks %s", key)
		}
	}
	table, err := run(t, "status", "--api", "http://"+api.Addr())
	if err != nil || !strings.Contains(table, "n3") || !strings.Contains(table, "dead") || !strings.Contains(table, "epoch 7") {
		t.Errorf("status table: %v\n%s", err, table)
	}
	// The device and GPU columns: a cuda member's GPU, a cpu member's
	// machine GPUs, and "-" where there are none.
	for name, want := range map[string][]string{"g1": {"cuda", "8 H200 (cuda:3)"}, "c1": {"cpu", " 2 "}, "n1": {"cpu", " - "}} {
		var line string
		for _, l := range strings.Split(table, "\n") {
			if strings.HasPrefix(l, name+" ") {
				line = l
			}
		}
		for _, w := range want {
			if !strings.Contains(line, w) {
				t.Errorf("status table: %s's line %q lacks %q", name, line, w)
			}
		}
	}
	if !strings.Contains(table, "DEVICE") || !strings.Contains(table, "GPUS") {
		t.Errorf("status table header:\n%s", table)
	}
	if _, err := run(t, "status", "--api", "http://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("unreachable API: %v, want an error naming it", err)
	}
	// The API refuses to start without a token.
	if _, err := node.StartAPI(node.APIConfig{Addr: "127.0.0.1:0"}, func() node.Status { return st }, prometheus.NewRegistry()); err == nil {
		t.Error("API without a token: no error")
	}
}
