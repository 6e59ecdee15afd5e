package kernels

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine other than the
// worker pool's (which lives for the process, by design) is left running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/braidml/braid/kernels.startPool.func1"))
}
