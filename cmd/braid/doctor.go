package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/kernels/cuda"
)

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "say what GPU support this machine has: driver, libraries, devices, a test kernel",
		Description: "Looks for the NVIDIA driver (libcuda), NVRTC and cuBLAS the way training does\n" +
			"(BRAID_CUDA_LIB_PATH, the loader's path, the usual CUDA directories), lists the GPUs,\n" +
			"compiles braid's kernels for the first one and runs a test kernel. Exits 1 if the GPU\n" +
			"is not usable, saying what is missing. The static bin/braid has no GPU support: use\n" +
			"bin/braid-cuda (make build-cuda).",
		Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "one JSON object"}},
		Action: runDoctor,
	}
}

func runDoctor(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("doctor takes no arguments, got %q", c.Args().Slice())
	}
	r := cuda.Doctor()
	w := c.App.Writer
	if c.Bool("json") {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, string(b))
	} else {
		if !r.Built {
			fmt.Fprintln(w, "GPU support: not in this binary (the static CPU build); use bin/braid-cuda (make build-cuda)")
		}
		for _, l := range r.Libraries {
			switch {
			case l.Error != "":
				fmt.Fprintf(w, "%-7s MISSING  %s\n", l.Name, l.Error)
			default:
				fmt.Fprintf(w, "%-7s %-10s %s\n", l.Name, l.Version, l.Path)
			}
		}
		for _, d := range r.Devices {
			fmt.Fprintf(w, "device  %s\n", d)
		}
		if r.KernelTest != "" {
			fmt.Fprintf(w, "kernels %s\n", r.KernelTest)
		}
		if r.Built {
			fmt.Fprintf(w, "cache   %s\n", r.CacheDir)
		}
		for _, p := range r.Problems {
			fmt.Fprintf(w, "problem %s\n", p)
		}
	}
	if !r.OK() {
		return cli.Exit("no usable GPU (see the problems above)", 1)
	}
	return nil
}
