package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/braidml/braid/kernels/cuda"
)

func TestMetaRoundTrip(t *testing.T) {
	h200 := gpuMeta(cuda.DeviceInfo{Index: 3, Name: "NVIDIA H200", MemoryBytes: 150754820096, Major: 9, Minor: 0, SMs: 132})
	for _, m := range []Meta{
		{Version: MetaVersion, QUICAddr: "10.0.0.7:7947", Cores: 64, GPUs: 8, MemoryBytes: 512 << 30, Build: "v0.1.0", RaftState: true},
		{Version: MetaVersion, QUICAddr: "10.0.0.7:7947", Cores: 64, Device: "cpu"},
		{Version: MetaVersion, QUICAddr: "10.0.0.7:7947", Cores: 64, GPUs: 8, Device: "cuda", GPU: h200},
		{Version: MetaVersion, QUICAddr: "mem:n2", Device: "cuda"}, // labelled, no GPU described
	} {
		b, err := m.Encode(512)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMeta(b)
		if err != nil || got != m {
			t.Fatalf("round trip of %s: %+v, %v", b, got, err)
		}
	}
	if got := h200.Info(); got.Name != "NVIDIA H200" || got.Index != 3 || got.MemoryBytes != 150754820096 || got.Major != 9 || got.SMs != 132 {
		t.Errorf("GPU round trip: %+v", got)
	}
	if _, err := (Meta{Version: MetaVersion, QUICAddr: "a:1"}).Encode(10); !errors.Is(err, ErrBadMeta) {
		t.Errorf("over the limit: %v", err)
	}
	if got := (Meta{}).DeviceKind(); got != "cpu" {
		t.Errorf("metadata without a device: %q, want cpu", got)
	}
}

// The largest metadata a real node gossips (an IPv6 address, the longest
// build string and GPU name, 16 TiB of memory, 8 PiB of disk, every other
// number at its bound) stays well under memberlist's 512 bytes.
func TestMetaFitsMemberlist(t *testing.T) {
	m := Meta{Version: MetaVersion, QUICAddr: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", Cores: 1 << 16, GPUs: 1 << 10,
		MemoryBytes: 1 << 44, DiskBytes: 1 << 53, Build: strings.Repeat("v", 64), RaftState: true, Leaving: true, Device: "cuda",
		GPU: gpuMeta(cuda.DeviceInfo{Index: 1023, Name: strings.Repeat("N", 200), MemoryBytes: 1 << 50, Major: 99, Minor: 99, SMs: 1 << 16})}
	b, err := m.Encode(512)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 400 {
		t.Errorf("worst-case metadata is %d bytes, want well under 512:\n%s", len(b), b)
	}
	if _, err := DecodeMeta(b); err != nil {
		t.Errorf("worst case does not decode: %v", err)
	}
	t.Logf("worst case: %d bytes", len(b))
}

func TestDecodeMetaRejects(t *testing.T) {
	for name, raw := range map[string]string{
		"not JSON":     "{",
		"old version":  `{"v":0,"quic":"a:1"}`,
		"no address":   `{"v":1}`,
		"space":        `{"v":1,"quic":"10.0.0.1 :7"}`,
		"at sign":      `{"v":1,"quic":"a@b:7"}`,
		"negative mem": `{"v":1,"quic":"a:1","mem":-1}`,
		"absurd cores": `{"v":1,"quic":"a:1","cores":100000000}`,
		"wrong type":   `{"v":1,"quic":7947}`,
		// Devices.
		"unknown device":    `{"v":1,"quic":"a:1","dev":"tpu"}`,
		"device case":       `{"v":1,"quic":"a:1","dev":"CUDA"}`,
		"GPU on a cpu":      `{"v":1,"quic":"a:1","dev":"cpu","gpu":{"i":0,"name":"H200","mem":1}}`,
		"GPU, no device":    `{"v":1,"quic":"a:1","gpu":{"i":0,"name":"H200","mem":1}}`,
		"GPU without name":  `{"v":1,"quic":"a:1","dev":"cuda","gpu":{"i":0,"mem":1}}`,
		"GPU name too long": `{"v":1,"quic":"a:1","dev":"cuda","gpu":{"name":"` + strings.Repeat("x", MaxGPUNameLen+1) + `"}}`,
		"GPU name control":  `{"v":1,"quic":"a:1","dev":"cuda","gpu":{"name":"H200\n"}}`,
		"GPU negative mem":  `{"v":1,"quic":"a:1","dev":"cuda","gpu":{"name":"H200","mem":-1}}`,
		"GPU index":         `{"v":1,"quic":"a:1","dev":"cuda","gpu":{"i":1024,"name":"H200"}}`,
		"GPU capability":    `{"v":1,"quic":"a:1","dev":"cuda","gpu":{"name":"H200","maj":100}}`,
		"GPU not an object": `{"v":1,"quic":"a:1","dev":"cuda","gpu":"H200"}`,
	} {
		if _, err := DecodeMeta([]byte(raw)); !errors.Is(err, ErrBadMeta) {
			t.Errorf("%s: %v, want ErrBadMeta", name, err)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add([]byte(`{"v":1,"quic":"10.0.0.7:7947","cores":2,"mem":1024,"build":"dev"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"v":1,"quic":"10.0.0.7:7947","cores":2,"gpus":1,"dev":"cuda","gpu":{"i":0,"name":"NVIDIA H200","mem":150754820096,"maj":9,"min":0,"sms":132}}`))
	f.Add([]byte(`{"v":1,"quic":"mem:n1","dev":"cuda"}`))
	f.Add([]byte(`{"v":1,"quic":"mem:n1","dev":"cpu","gpu":{}}`))
	f.Add([]byte(`{"v":1,"quic":"mem:n1","dev":"cuda","gpu":{"name":"\u00e9\u2028"}}`))
	f.Add([]byte(`{"v":1,"quic":"10.0.0.7:7947","cert":"5a1f00c3d2"}`))
	f.Add([]byte(`{"v":1,"quic":"10.0.0.7:7947","cert":"0A"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		enc, err := m.Encode(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := DecodeMeta(enc); err != nil || again != m {
			t.Fatalf("re-decode: %+v %v", again, err)
		}
	})
}
