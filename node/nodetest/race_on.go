//go:build race

package nodetest

// timerScale stretches the test clusters' Raft and gossip timers under the
// race detector, which slows everything 2–10×: on a loaded 2-core machine a
// 50 ms probe timeout or a 200 ms election timeout then fires on nodes that
// are only slow, and tests wobble on elections and suspicions that have
// nothing to do with what they check.
const timerScale = 2
