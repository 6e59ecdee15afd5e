package train_test

import (
	"runtime/debug"
	"testing"
)

// allocsPerRun is testing.AllocsPerRun with the garbage collector off for
// the measurement: a collection empties every sync.Pool, and the next
// Get then allocates, so on a busy machine (a collection during the runs)
// a step that allocates nothing in steady state would count one.
func allocsPerRun(runs int, f func()) float64 {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	return testing.AllocsPerRun(runs, f)
}
