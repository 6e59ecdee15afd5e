package nodetest

import (
	"sync"
	"time"
)

// ManualClock is a clock that moves only when told (node.Deps.Now): the
// collector's grace period passes in an instant.
type ManualClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewManualClock returns a clock that reads start until moved.
func NewManualClock(start time.Time) *ManualClock { return &ManualClock{now: start} }

// Now reads the clock. Safe for concurrent use.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// WithClock makes every node read clock (node.Deps.Now): the collector
// ages objects by it and the store dates what it installs with it.
func WithClock(clock *ManualClock) Option { return func(c *Cluster) { c.clock = clock } }

// WithMaxPendingUploadBytes sets every node's
// node.Config.MaxPendingUploadBytes.
func WithMaxPendingUploadBytes(n int64) Option { return func(c *Cluster) { c.pending = n } }
