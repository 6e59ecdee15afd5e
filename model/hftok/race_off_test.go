//go:build !race

package hftok_test

const raceEnabled = false
