package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/cudamodel"
)

// deviceFlags are --device and --precision, shared by the commands that run
// a model.
func deviceFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "device", Value: "auto", Usage: "where to compute: cpu, cuda (GPU 0), cuda:N, or auto (a usable GPU, else the CPU)"},
		&cli.StringFlag{Name: "precision", Value: "bf16", Usage: "on a GPU: bf16 (mixed precision, float32 master weights), tf32 or fp32"},
	}
}

// openDevice reads --device and --precision and opens the GPU they ask
// for; it returns a nil device for the CPU. It says on w which it chose.
// An explicit cuda that cannot be had is an error naming why; auto falls
// back to the CPU and says why.
func openDevice(c *cli.Context, w io.Writer) (*cuda.Device, cuda.Precision, error) {
	kind, index, err := cuda.ParseDevice(c.String("device"))
	if err != nil {
		return nil, 0, fmt.Errorf("--device: %w", err)
	}
	prec, err := cuda.ParsePrecision(c.String("precision"))
	if err != nil {
		return nil, 0, fmt.Errorf("--precision: %w", err)
	}
	if kind == "cpu" {
		return nil, prec, nil
	}
	if kind == "auto" {
		devs, err := cuda.Devices()
		if err != nil || len(devs) == 0 {
			why := "no GPU found"
			if err != nil {
				why = err.Error()
			}
			if err != cuda.ErrNotBuilt { // the static build has nothing to say about GPUs
				fmt.Fprintf(w, "device: cpu (%s)\n", why)
			}
			return nil, prec, nil
		}
	}
	dev, err := cuda.Open(index)
	if err != nil && kind == "auto" {
		fmt.Fprintf(w, "device: cpu (the GPU could not be opened: %v)\n", err)
		return nil, prec, nil
	}
	if err != nil {
		return nil, 0, err
	}
	fmt.Fprintf(w, "device: %s, %s\n", dev.Info, prec)
	return dev, prec, nil
}

// inferenceModel builds the model eval and generate run, for batches of B
// × T: on the GPU --device picks (with --adapter merged into the weights)
// or on the CPU (with --adapter attached). Call done when finished with it.
func inferenceModel(c *cli.Context, ck *model.Checkpoint, B, T int) (m model.LanguageModel, done func(), err error) {
	info := c.App.ErrWriter
	if info == nil {
		info = os.Stderr
	}
	dev, prec, err := openDevice(c, info)
	if err != nil {
		return nil, nil, err
	}
	adapter := c.String("adapter")
	if dev == nil {
		cm, err := model.NewInference(ck.Config, B, T)
		if err != nil {
			return nil, nil, err
		}
		copy(cm.Params, ck.Params)
		if adapter != "" {
			if err := attachAdapter(cm, adapter); err != nil {
				return nil, nil, err
			}
		}
		return cm, func() {}, nil
	}
	params := ck.Params
	if adapter != "" {
		a, err := model.LoadAdapter(adapter, ck.Config)
		if err != nil {
			dev.Close()
			return nil, nil, err
		}
		if params, err = model.MergeLoRA(ck.Config, ck.Params, a); err != nil {
			dev.Close()
			return nil, nil, err
		}
	}
	dm, err := cudamodel.NewInference(dev, ck.Config, B, T, prec)
	if err != nil {
		dev.Close()
		return nil, nil, err
	}
	done = func() { dm.Close(); dev.Close() }
	if err := dm.WriteParams(params); err != nil {
		done()
		return nil, nil, err
	}
	return dm, done, nil
}
