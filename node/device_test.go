package node

import (
	"strings"
	"testing"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/kernels/cuda"
)

func TestConfigDevice(t *testing.T) {
	h200 := &cuda.DeviceInfo{Index: 0, Name: "NVIDIA H200", MemoryBytes: 141 << 30, Major: 9, Minor: 0, SMs: 132}
	base := DefaultConfig()
	base.Name, base.DataDir = "n1", t.TempDir()
	for _, ok := range []struct {
		device string
		gpu    *cuda.DeviceInfo
	}{{"", nil}, {"cpu", nil}, {"cuda", h200}} {
		c := base
		c.Device, c.GPU = ok.device, ok.gpu
		if err := c.Validate(); err != nil {
			t.Errorf("device %q, GPU %v: %v", ok.device, ok.gpu, err)
		}
	}
	for name, bad := range map[string]struct {
		device, want string
		gpu          *cuda.DeviceInfo
	}{
		"unknown kind":     {"tpu", `"tpu"`, nil},
		"an index":         {"cuda:0", `"cuda:0"`, h200},
		"cuda, no GPU":     {"cuda", "needs the GPU", nil},
		"cpu with a GPU":   {"cpu", "H200", h200},
		"GPU out of range": {"cuda", "cannot be advertised", &cuda.DeviceInfo{Name: "H200", Major: 100}},
	} {
		c := base
		c.Device, c.GPU = bad.device, bad.gpu
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want an error with %s", name, err, bad.want)
		}
	}
	// An odd name from the driver is made fit to gossip, not refused.
	for in, want := range map[string]string{"H200\x00": "H200?", "": "GPU", strings.Repeat("é", 40): strings.Repeat("é", MaxGPUNameLen/2)} {
		c := base
		c.Device, c.GPU = "cuda", &cuda.DeviceInfo{Name: in}
		if err := c.Validate(); err != nil {
			t.Errorf("GPU named %q: %v", in, err)
		}
		if got := gpuMeta(*c.GPU).Name; got != want {
			t.Errorf("GPU named %q gossiped as %q, want %q", in, got, want)
		}
	}
	if _, err := New(base, Deps{DeviceLabel: "gpu"}); err == nil || !strings.Contains(err.Error(), `"gpu"`) {
		t.Errorf("DeviceLabel gpu: %v, want an error naming it", err)
	}
}

// Where a node computes, what it advertises, and what a job's worker there
// computes on.
func TestNodeDevice(t *testing.T) {
	h200 := &cuda.DeviceInfo{Index: 2, Name: "NVIDIA H200", MemoryBytes: 141 << 30, Major: 9}
	for _, c := range []struct {
		name             string
		cfg              Config
		label            string
		compute, advert  string
		cudaJobGPU       bool
		runsCPU, runsGPU bool
	}{
		{"cpu", Config{}, "", "cpu", "cpu", false, true, false},
		{"gpu", Config{Device: "cuda", GPU: h200}, "", "cuda", "cuda", true, false, true},
		{"labelled cuda", Config{}, "cuda", "cpu", "cuda", false, false, true},
	} {
		n := &Node{cfg: c.cfg, deps: Deps{DeviceLabel: c.label}}
		if kind, _ := n.computeDevice(); kind != c.compute {
			t.Errorf("%s: computes on %s, want %s", c.name, kind, c.compute)
		}
		if got := n.placementDevice(); got != c.advert {
			t.Errorf("%s: advertises %s, want %s", c.name, got, c.advert)
		}
		if n.runsOn("") != c.runsCPU || n.runsOn("cpu") != c.runsCPU || n.runsOn("cuda") != c.runsGPU {
			t.Errorf("%s: runs cpu jobs %v, cuda jobs %v", c.name, n.runsOn("cpu"), n.runsOn("cuda"))
		}
		cudaJob := &jobRunner{n: n, spec: coordinator.JobSpec{Device: "cuda"}}
		cpuJob := &jobRunner{n: n, spec: coordinator.JobSpec{}}
		if (cudaJob.gpu() != nil) != c.cudaJobGPU || cpuJob.gpu() != nil {
			t.Errorf("%s: a cuda job's worker computes on %v, a cpu job's on %v", c.name, cudaJob.gpu(), cpuJob.gpu())
		}
	}
	n := &Node{cfg: Config{Device: "cuda", GPU: h200}}
	if got := (&jobRunner{n: n, spec: coordinator.JobSpec{Device: "cuda"}}).deviceName(); got != "cuda:2 NVIDIA H200" {
		t.Errorf("worker device %q", got)
	}
}

func TestMetaMapDevice(t *testing.T) {
	if got := metaMap(Meta{})[coordinator.MetaDevice]; got != "cpu" {
		t.Errorf("metadata without a device recorded as %q, want cpu", got)
	}
	m := metaMap(Meta{Device: "cuda", GPU: GPUMeta{Name: "NVIDIA H200"}})
	if m[coordinator.MetaDevice] != "cuda" || m["gpu"] != "NVIDIA H200" {
		t.Errorf("cuda metadata recorded as %v", m)
	}
	if (coordinator.Member{Meta: m}).Device() != "cuda" {
		t.Error("the coordinator does not read the device back")
	}
}

func TestEpochOnDevice(t *testing.T) {
	st := coordinator.State{Members: []coordinator.Member{
		{Name: "a", State: coordinator.MemberAlive, Meta: map[string]string{coordinator.MetaDevice: "cuda"}},
		{Name: "b", State: coordinator.MemberAlive},
		{Name: "c", State: coordinator.MemberAlive, Meta: map[string]string{coordinator.MetaDevice: "cuda"}},
	}}
	for _, c := range []struct {
		members []string
		device  string
		want    bool
	}{
		{[]string{"a", "c"}, "cuda", true},
		{[]string{"a", "b"}, "cuda", false},
		{[]string{"b"}, "cpu", true},
		{[]string{"b", "c"}, "cpu", false},
		{[]string{"a", "x"}, "cuda", false}, // x unknown
	} {
		if got := epochOnDevice(st, coordinator.Epoch{ID: 1, Members: c.members}, c.device); got != c.want {
			t.Errorf("%v on %s: %v, want %v", c.members, c.device, got, c.want)
		}
	}
}
