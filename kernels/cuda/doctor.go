package cuda

import (
	"fmt"
	"math"
	"time"
)

// Doctor reports what the backend finds on this machine: each library and
// where it came from, the driver's CUDA version, the devices, and whether
// braid's kernels compile with NVRTC and a test kernel runs correctly on
// the first device. It never fails; what is wrong is in Report.Problems.
func Doctor() Report {
	r := Report{Built: built, CacheDir: CacheDir()}
	if !built {
		r.Problems = append(r.Problems, ErrNotBuilt.Error())
		return r
	}
	err := load()
	r.Libraries = append(r.Libraries, loaded...)
	if len(loaded) > 0 && loaded[0].Error == "" {
		r.DriverVersion = loaded[0].Version
	}
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return r
	}
	devs, err := Devices()
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return r
	}
	r.Devices = devs
	if len(devs) == 0 {
		r.Problems = append(r.Problems, ErrNoDevice.Error()+": the driver loaded but lists no GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)")
		return r
	}
	start := time.Now()
	if err := testKernel(0); err != nil {
		r.KernelTest = "failed: " + err.Error()
		r.Problems = append(r.Problems, err.Error())
		return r
	}
	r.KernelTest = fmt.Sprintf("ok: braid's kernels compiled (or read from the cache) for %s and a test kernel ran correctly, in %s", devs[0].Arch(), time.Since(start).Round(time.Millisecond))
	return r
}

// testKernel compiles the kernels for device i and checks axpy on 1M floats.
func testKernel(i int) error {
	d, err := Open(i)
	if err != nil {
		return err
	}
	defer d.Close()
	unlock := d.Lock()
	defer unlock()
	const n = 1 << 20
	x, y, got := make([]float32, n), make([]float32, n), make([]float32, n)
	for j := range x {
		x[j], y[j] = float32(j%1000)*0.5, float32(j%7)
	}
	var bufs [3]Buffer
	for j := range bufs {
		if bufs[j], err = d.Alloc(4*n, "the test kernel's buffers"); err != nil {
			return err
		}
		defer d.Free(bufs[j])
	}
	if err := d.UploadF32(bufs[0], x); err != nil {
		return err
	}
	if err := d.UploadF32(bufs[1], y); err != nil {
		return err
	}
	if err := d.Axpy(bufs[2], bufs[0], bufs[1], 3, n); err != nil {
		return err
	}
	if err := d.DownloadF32(got, bufs[2]); err != nil {
		return err
	}
	for j := range got {
		if want := 3*x[j] + y[j]; !(math.Abs(float64(got[j]-want)) <= 1e-6*math.Abs(float64(want))) {
			return fmt.Errorf("cuda: the test kernel computed %g at %d, want %g", got[j], j, want)
		}
	}
	return nil
}
