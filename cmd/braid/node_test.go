package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/braidml/braid/kernels/cuda"
)

func TestChooseDevice(t *testing.T) {
	two := func() ([]cuda.DeviceInfo, error) {
		return []cuda.DeviceInfo{{Index: 0, Name: "NVIDIA H200", MemoryBytes: 141 << 30, Major: 9}, {Index: 1, Name: "NVIDIA H200", Major: 9}}, nil
	}
	none := func() ([]cuda.DeviceInfo, error) { return nil, nil }
	notBuilt := func() ([]cuda.DeviceInfo, error) { return nil, cuda.ErrNotBuilt }
	for _, c := range []struct {
		flag    string
		devices func() ([]cuda.DeviceInfo, error)
		kind    string
		index   int // of the GPU chosen, for cuda
	}{
		{"cpu", two, "cpu", 0},
		{"auto", two, "cuda", 0},
		{"auto", none, "cpu", 0},
		{"auto", notBuilt, "cpu", 0},
		{"cuda", two, "cuda", 0},
		{"gpu", two, "cuda", 0},
		{"cuda:1", two, "cuda", 1},
	} {
		kind, gpu, why, err := chooseDevice(c.flag, c.devices)
		if err != nil || kind != c.kind || (gpu != nil) != (kind == "cuda") || gpu != nil && gpu.Index != c.index || why == "" {
			t.Errorf("--device %s: %s, %v, %q, %v", c.flag, kind, gpu, why, err)
		}
	}
	if _, _, why, _ := chooseDevice("auto", notBuilt); !strings.Contains(why, "without GPU support") {
		t.Errorf("auto on the static build says %q, want why it chose the CPU", why)
	}
	for _, c := range []struct {
		flag    string
		devices func() ([]cuda.DeviceInfo, error)
		want    string
		is      error
	}{
		{"cuda", notBuilt, "without GPU support", cuda.ErrNotBuilt},
		{"cuda:0", none, "no CUDA device", cuda.ErrNoDevice},
		{"cuda:2", two, "cuda:0 NVIDIA H200, cuda:1 NVIDIA H200", nil},
		{"tpu", two, `"tpu"`, nil},
		{"cuda:x", two, `"cuda:x"`, nil},
	} {
		_, _, _, err := chooseDevice(c.flag, c.devices)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--device") || c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("--device %s: %v, want an error naming --device and %s", c.flag, err, c.want)
		}
	}
}

// `braid node --device` refuses what it cannot parse before starting
// anything, naming the flag.
func TestNodeDeviceFlag(t *testing.T) {
	if out, err := run(t, "node", "--name", "n1", "--data-dir", t.TempDir(), "--tls-dir", t.TempDir(), "--device", "tpu"); err == nil || !strings.Contains(err.Error(), `--device: device "tpu"`) {
		t.Errorf("--device tpu: %v\n%s", err, out)
	}
	// Without a usable GPU (the static build, a machine without one), an
	// explicit cuda is an error saying why.
	if devs, err := cuda.Devices(); err == nil && len(devs) > 0 {
		return
	}
	if out, err := run(t, "node", "--name", "n1", "--data-dir", t.TempDir(), "--tls-dir", t.TempDir(), "--device", "cuda"); err == nil || !strings.Contains(err.Error(), "--device cuda") {
		t.Errorf("--device cuda: %v\n%s", err, out)
	}
}

func TestJobSubmitDeviceFlag(t *testing.T) {
	out, err := run(t, "job", "submit", "--api", "http://127.0.0.1:1", "--base", t.TempDir(), "--dataset", "d", "--steps", "1", "--global-batch", "1", "--device", "tpu")
	if err == nil || !strings.Contains(err.Error(), `--device: device "tpu": want cpu or cuda`) {
		t.Errorf("--device tpu: %v\n%s", err, out)
	}
}

// `braid node` refuses a grace period too short to upload and register a
// dataset in, and an upload backlog smaller than one upload, naming the
// flags.
func TestNodeCollectorFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--gc-grace", "5s"}, "--gc-grace 5s, want 0 (1h0m0s) or at least 1m0s"},
		{[]string{"--max-upload", "1000", "--max-pending-upload", "999"}, "--max-pending-upload 999 is less than --max-upload 1000"},
	} {
		args := append([]string{"node", "--name", "n1", "--data-dir", t.TempDir(), "--tls-dir", t.TempDir(), "--device", "cpu"}, tc.args...)
		if out, err := run(t, args...); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%v: %v, want an error saying %q\n%s", tc.args, err, tc.says, out)
		}
	}
}
