//go:build !race

package coordinator

// timerScale: see race_on_test.go.
const timerScale = 1
