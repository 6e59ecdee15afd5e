package node

import (
	"encoding/json"
	"errors"
	"fmt"
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
	return m, nil
}
