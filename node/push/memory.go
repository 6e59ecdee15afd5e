package push

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// Memory is a Target that keeps objects in memory, checking each one's
// hash as a node does; for tests of code that pushes. Safe for concurrent
// use.
type Memory struct {
	mu      sync.Mutex
	objects map[string][]byte // by hash
	private map[string]bool
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	return &Memory{objects: map[string][]byte{}, private: map[string]bool{}}
}

// Has implements Target.
func (m *Memory) Has(_ context.Context, hash string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.objects[hash]
	return ok, nil
}

// Put implements Target: it refuses bytes that do not hash to hash or are
// not size long, and stores nothing then.
func (m *Memory) Put(_ context.Context, hash string, size int64, r io.Reader, private bool) error {
	b, err := io.ReadAll(io.LimitReader(r, size+1))
	if err != nil {
		return err
	}
	s := sha256.Sum256(b)
	if got := hex.EncodeToString(s[:]); got != hash || int64(len(b)) != size {
		return fmt.Errorf("push: memory target: %d bytes hashing to %.12s, sent as %.12s of %d bytes", len(b), got, hash, size)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objects[hash] = b
	if private {
		m.private[hash] = true
	}
	return nil
}

// Object returns the bytes of object hash, and whether it was sent private.
func (m *Memory) Object(hash string) (b []byte, private, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok = m.objects[hash]
	return b, m.private[hash], ok
}

// Len is the number of objects held.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.objects)
}
