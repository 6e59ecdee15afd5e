package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// buildInfo is what `braid version` prints.
type buildInfo struct {
	Version string `json:"version"`          // main.version, set by make
	Go      string `json:"go"`               // the Go toolchain it was built with
	Build   string `json:"build"`            // "cpu" (the static bin/braid) or "cuda" (bin/braid-cuda)
	OS      string `json:"os"`               // GOOS
	Arch    string `json:"arch"`             // GOARCH
	Commit  string `json:"commit,omitempty"` // the VCS revision, when the build recorded it
	// Modified says the working tree had changes the commit lacks.
	Modified bool `json:"modified,omitempty"`
}

// readBuildInfo reads the binary's build settings: GPU support is the cuda
// build tag on Linux (kernels/cuda's dl_cuda.go), as `make build-cuda`
// sets it.
func readBuildInfo() buildInfo {
	bi := buildInfo{Version: version, Go: runtime.Version(), Build: "cpu", OS: runtime.GOOS, Arch: runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return bi
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "-tags":
			if runtime.GOOS == "linux" && strings.Contains(","+s.Value+",", ",cuda,") {
				bi.Build = "cuda"
			}
		case "vcs.revision":
			bi.Commit = s.Value
		case "vcs.modified":
			bi.Modified = s.Value == "true"
		}
	}
	return bi
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print braid's version, the Go it was built with, its build (cpu or cuda) and OS/architecture",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: `print {"version","go","build","os","arch","commit","modified"}`}},
		Action: func(c *cli.Context) error {
			bi := readBuildInfo()
			if c.Bool("json") {
				b, err := json.Marshal(bi)
				if err != nil {
					return err
				}
				fmt.Fprintln(c.App.Writer, string(b))
				return nil
			}
			build := "cpu (static binary, no GPU support: bin/braid-cuda has it)"
			if bi.Build == "cuda" {
				build = "cuda (loads the NVIDIA driver, cuBLAS and NVRTC at run time; `braid doctor` checks them)"
			}
			w := c.App.Writer
			fmt.Fprintf(w, "braid %s\n", bi.Version)
			fmt.Fprintf(w, "go       %s\n", bi.Go)
			fmt.Fprintf(w, "build    %s\n", build)
			fmt.Fprintf(w, "os/arch  %s/%s\n", bi.OS, bi.Arch)
			if bi.Commit != "" {
				mod := ""
				if bi.Modified {
					mod = " (with uncommitted changes)"
				}
				fmt.Fprintf(w, "commit   %s%s\n", bi.Commit, mod)
			}
			return nil
		},
	}
}
