package node

import (
	"errors"
	"fmt"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/kernels/cuda"
)

// Devices (ARCHITECTURE.md, "Devices"). A node computes on the CPU or on one
// GPU (Config.Device, Config.GPU) and gossips which in its metadata
// (Meta.Device, Meta.GPU); the coordinator records the kind as the member's
// coordinator.MetaDevice. A job names the device kind it runs on
// (coordinator.JobSpec.Device): the leader commits epochs of the members on
// that kind only while the job runs, starts a job only when such a member is
// alive (startJobs), and a node runs a job's worker only when it computes on
// the job's device. The worker reads where to compute from jobRunner.gpu.

// validDevice checks Device and GPU together.
func (c Config) validDevice() error {
	switch c.Device {
	case "", coordinator.DeviceCPU:
		if c.GPU != nil {
			return fmt.Errorf("node: GPU %s given to a node that computes on the CPU (use --device cuda)", c.GPU)
		}
		return nil
	case coordinator.DeviceCUDA:
		if c.GPU == nil {
			return errors.New("node: --device cuda needs the GPU the node computes on (Config.GPU, from cuda.Devices)")
		}
		if err := (Meta{Device: coordinator.DeviceCUDA, GPU: gpuMeta(*c.GPU)}).checkDevice(); err != nil {
			return fmt.Errorf("node: GPU %s cannot be advertised: %v", c.GPU, err)
		}
		return nil
	}
	return fmt.Errorf("node: --device %q: want cpu or cuda", c.Device)
}

func validDeviceLabel(l string) error {
	if err := coordinator.ValidDevice(l); err != nil {
		return fmt.Errorf("node: Deps.DeviceLabel: %v", err)
	}
	return nil
}

// computeDevice is where this node's workers compute: the device kind and,
// for cuda, the GPU.
func (n *Node) computeDevice() (kind string, gpu *cuda.DeviceInfo) {
	if n.cfg.Device == coordinator.DeviceCUDA {
		return coordinator.DeviceCUDA, n.cfg.GPU
	}
	return coordinator.DeviceCPU, nil
}

// placementDevice is the device kind this node advertises and jobs place it
// by: Deps.DeviceLabel when set, else where it computes.
func (n *Node) placementDevice() string {
	if n.deps.DeviceLabel != "" {
		return n.deps.DeviceLabel
	}
	kind, _ := n.computeDevice()
	return kind
}

// runsOn reports whether this node takes part in jobs that run on device.
func (n *Node) runsOn(device string) bool {
	if device == "" {
		device = coordinator.DeviceCPU
	}
	return n.placementDevice() == device
}

// gpu is the GPU the job's worker computes on here: this node's, for a cuda
// job on a node that computes on a GPU; nil means the CPU (a CPU job, or a
// node only labelled cuda by Deps.DeviceLabel).
func (r *jobRunner) gpu() *cuda.DeviceInfo {
	kind, gpu := r.n.computeDevice()
	if r.spec.DeviceKind() != coordinator.DeviceCUDA || kind != coordinator.DeviceCUDA {
		return nil
	}
	return gpu
}

// deviceName says where the job's worker computes here, for its progress:
// "cpu", or "cuda:N NAME".
func (r *jobRunner) deviceName() string {
	if g := r.gpu(); g != nil {
		return fmt.Sprintf("cuda:%d %s", g.Index, g.Name)
	}
	return coordinator.DeviceCPU
}

// epochOnDevice reports whether every member of e computes on device, as
// the committed state records it. The leader commits such epochs once a
// job runs; the epoch committed before the job started may mix kinds, and
// a worker waits for the next.
func epochOnDevice(st coordinator.State, e coordinator.Epoch, device string) bool {
	for _, name := range e.Members {
		if m, ok := st.Member(name); !ok || m.Device() != device {
			return false
		}
	}
	return true
}
