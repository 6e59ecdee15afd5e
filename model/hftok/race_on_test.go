//go:build race

package hftok_test

// raceEnabled: the race detector slows tokenisation tenfold, so the
// corpus tests read less of each file under it.
const raceEnabled = true
