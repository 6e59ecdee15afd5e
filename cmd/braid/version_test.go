package main

import (
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/braidml/braid/kernels/cuda"
)

// braid version names the build this test runs in.
func TestVersionCommand(t *testing.T) {
	log, err := run(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	build := "cpu"
	if _, err := cuda.Devices(); !errors.Is(err, cuda.ErrNotBuilt) {
		build = "cuda"
	}
	for _, want := range []string{"braid " + version, runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH, "build    " + build} {
		if !strings.Contains(log, want) {
			t.Errorf("version lacks %q:\n%s", want, log)
		}
	}
	js, err := run(t, "version", "--json")
	var bi buildInfo
	if err != nil || json.Unmarshal([]byte(js), &bi) != nil || bi.Build != build || bi.Go != runtime.Version() {
		t.Errorf("version --json: %v: %s", err, js)
	}
}
