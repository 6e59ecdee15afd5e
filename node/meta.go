package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/transport/pki"
)

// ErrBadMeta is wrapped by every error about gossiped node metadata.
var ErrBadMeta = errors.New("node: bad member metadata")

// MetaVersion is the version of the Meta encoding this build writes.
const MetaVersion = 1

// Meta is what a node gossips about itself with memberlist. It must fit
// memberlist's metadata limit (512 bytes), so it stays small.
type Meta struct {
	Version     int    `json:"v"`
	QUICAddr    string `json:"quic"`           // host:port peers dial for streams
	Cores       int    `json:"cores"`          // logical CPUs
	GPUs        int    `json:"gpus,omitempty"` // accelerators
	MemoryBytes int64  `json:"mem"`            // physical memory
	DiskBytes   int64  `json:"disk,omitempty"` // free bytes for data in the data directory
	Build       string `json:"build"`          // braid version
	RaftState   bool   `json:"raft,omitempty"` // has Raft state on disk (for bootstrap-expect)
	Leaving     bool   `json:"leaving,omitempty"`
	// Leaving is set just before a graceful leave, so that peers can tell
	// a departure from a failure (memberlist reports both as a leave).

	// Device is the device kind the node computes on and jobs place it
	// by: "cpu" or "cuda" (coordinator.DeviceCPU, DeviceCUDA); empty from
	// builds that did not say, which compute on the CPU.
	Device string `json:"dev,omitempty"`
	// GPU is the GPU a cuda node computes on; zero on a CPU node, and on
	// a node labelled cuda for tests (Deps.DeviceLabel).
	GPU GPUMeta `json:"gpu,omitzero"`
	// Cert is the serial number of the certificate the node presents
	// (pki.Serial), empty without TLS. Peers drop a member whose serial
	// the cluster revoked; the claim itself proves nothing, the TLS
	// handshake does (a revoked certificate is refused there whatever
	// the member gossips).
	Cert string `json:"cert,omitempty"`
}

// GPUMeta is the gossiped form of a cuda.DeviceInfo, with short keys.
type GPUMeta struct {
	Index       int    `json:"i"`    // the device index, cuda:Index
	Name        string `json:"name"` // as the driver reports it, at most MaxGPUNameLen bytes
	MemoryBytes int64  `json:"mem"`
	Major       int    `json:"maj"` // compute capability Major.Minor
	Minor       int    `json:"min"`
	SMs         int    `json:"sms,omitempty"`
}

// MaxGPUNameLen bounds GPUMeta.Name; longer names are cut.
const MaxGPUNameLen = 48

// gpuMeta is d's gossiped form. The name is made fit to gossip (cut to
// MaxGPUNameLen, unprintable characters replaced) rather than refused: a
// driver's odd name must not keep a node from starting.
func gpuMeta(d cuda.DeviceInfo) GPUMeta {
	name := strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(d.Name, "?"))
	if len(name) > MaxGPUNameLen {
		name = strings.ToValidUTF8(name[:MaxGPUNameLen], "")
	}
	if name == "" {
		name = "GPU"
	}
	return GPUMeta{Index: d.Index, Name: name, MemoryBytes: d.MemoryBytes, Major: d.Major, Minor: d.Minor, SMs: d.SMs}
}

// Info is g as a cuda.DeviceInfo.
func (g GPUMeta) Info() cuda.DeviceInfo {
	return cuda.DeviceInfo{Index: g.Index, Name: g.Name, MemoryBytes: g.MemoryBytes, Major: g.Major, Minor: g.Minor, SMs: g.SMs}
}

// DeviceKind is the device kind m computes on ("cpu" when Device is empty).
func (m Meta) DeviceKind() string {
	if m.Device == "" {
		return coordinator.DeviceCPU
	}
	return m.Device
}

// Encode returns the JSON encoding of m, or an error if it exceeds limit.
func (m Meta) Encode(limit int) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%w: %d bytes, memberlist allows %d", ErrBadMeta, len(b), limit)
	}
	return b, nil
}

// DecodeMeta parses and validates metadata gossiped by a peer. It never
// panics and bounds every field.
func DecodeMeta(b []byte) (Meta, error) {
	if len(b) > 4096 {
		return Meta{}, fmt.Errorf("%w: %d bytes", ErrBadMeta, len(b))
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("%w: %v", ErrBadMeta, err)
	}
	if m.Version != MetaVersion {
		return Meta{}, fmt.Errorf("%w: version %d, this build reads %d", ErrBadMeta, m.Version, MetaVersion)
	}
	// The transport address is opaque here (host:port for QUIC, mem:NAME on
	// memnet): printable ASCII without spaces or '@', 1..256 bytes.
	if len(m.QUICAddr) < 1 || len(m.QUICAddr) > 256 {
		return Meta{}, fmt.Errorf("%w: transport address of %d bytes", ErrBadMeta, len(m.QUICAddr))
	}
	for _, c := range []byte(m.QUICAddr) {
		if c <= ' ' || c >= 0x7f || c == '@' {
			return Meta{}, fmt.Errorf("%w: transport address %q has a forbidden byte", ErrBadMeta, m.QUICAddr)
		}
	}
	if m.Cores < 0 || m.Cores > 1<<16 || m.GPUs < 0 || m.GPUs > 1<<10 || m.MemoryBytes < 0 || m.DiskBytes < 0 || len(m.Build) > 64 {
		return Meta{}, fmt.Errorf("%w: out-of-range field in %+v", ErrBadMeta, m)
	}
	if err := m.checkDevice(); err != nil {
		return Meta{}, fmt.Errorf("%w: %v", ErrBadMeta, err)
	}
	if m.Cert != "" && !pki.ValidSerial(m.Cert) {
		return Meta{}, fmt.Errorf("%w: certificate serial %q is not lower-case hexadecimal of 1..40 digits", ErrBadMeta, truncateBytes(m.Cert, 44))
	}
	return m, nil
}

// checkDevice bounds the device fields: a known kind, a GPU only on a cuda
// node, and the GPU's fields in range.
func (m Meta) checkDevice() error {
	switch m.Device {
	case "", coordinator.DeviceCPU:
		if m.GPU != (GPUMeta{}) {
			return fmt.Errorf("a GPU on a node that computes on the CPU")
		}
		return nil
	case coordinator.DeviceCUDA:
	default:
		return fmt.Errorf("device %q: want cpu or cuda", truncateBytes(m.Device, 16))
	}
	g := m.GPU
	if g == (GPUMeta{}) {
		return nil // labelled cuda, no GPU described
	}
	if len(g.Name) < 1 || len(g.Name) > MaxGPUNameLen || !utf8.ValidString(g.Name) {
		return fmt.Errorf("GPU name of %d bytes, want 1..%d of UTF-8", len(g.Name), MaxGPUNameLen)
	}
	for _, r := range g.Name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("GPU name %q has an unprintable character", g.Name)
		}
	}
	if g.Index < 0 || g.Index > 1023 || g.MemoryBytes < 0 || g.MemoryBytes > 1<<50 || g.Major < 0 || g.Major > 99 ||
		g.Minor < 0 || g.Minor > 99 || g.SMs < 0 || g.SMs > 1<<16 {
		return fmt.Errorf("out-of-range GPU field in %+v", g)
	}
	return nil
}

func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
