package coordinator

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// raft answers a configuration change still queued for its leader loop
	// when it shuts down (AddVoter, RemoveServer, ...) with nothing: the
	// goroutine of Coordinator.wait that waits on that future stays parked
	// after the raft instance is gone. It holds nothing and does nothing;
	// the server it belonged to is closed.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*deferError).Error"))
}

// testLogger sends logs at level and above to t.Log while the test runs
// (so only failing tests are noisy) and drops them after it ends.
func testLogger(t testing.TB, level slog.Level) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(w.close)
	if os.Getenv("COORDINATOR_TEST_LOG") == "" && !testing.Verbose() {
		level = max(level, slog.LevelWarn)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type tWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

var _ io.Writer = (*tWriter)(nil)

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Helper()
		w.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}

func (w *tWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// eventually polls cond every few milliseconds until it holds or timeout
// passes, then fails the test with what.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
