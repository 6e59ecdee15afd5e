//go:build !race

package nodetest

// timerScale: see race_on.go.
const timerScale = 1
