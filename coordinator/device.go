package coordinator

import (
	"fmt"
	"strings"
)

// Devices. A node computes on the CPU or on one GPU and says which in its
// member metadata (key MetaDevice); a job names the device kind it runs on
// (JobSpec.Device). A job runs on members of one device kind only: while
// a job runs, the leader commits epochs of the alive members that compute
// on the job's device and no others, and CommitEpoch refuses an epoch that
// mixes them in (ARCHITECTURE.md, "Devices").

// The device kinds.
const (
	DeviceCPU  = "cpu"
	DeviceCUDA = "cuda"
)

// MetaDevice is the member metadata key that holds the device kind the
// member computes on. A member without it computes on the CPU (builds from
// before devices were advertised).
const MetaDevice = "device"

// ValidDevice checks a device kind as a job or a node names it; the empty
// string stands for DeviceCPU.
func ValidDevice(d string) error {
	switch d {
	case "", DeviceCPU, DeviceCUDA:
		return nil
	}
	return fmt.Errorf("device %q: want %s or %s", truncate(d, 20), DeviceCPU, DeviceCUDA)
}

// deviceOrCPU maps the empty device to DeviceCPU.
func deviceOrCPU(d string) string {
	if d == "" {
		return DeviceCPU
	}
	return d
}

// Device is the device kind m computes on, from its metadata (DeviceCPU
// when it does not say).
func (m Member) Device() string { return deviceOrCPU(m.Meta[MetaDevice]) }

// DeviceKind is the device kind the job runs on (DeviceCPU when Device is
// empty).
func (s JobSpec) DeviceKind() string { return deviceOrCPU(s.Device) }

// RunningJob returns the running job (the first in submission order, should
// there be several).
func (s State) RunningJob() (Job, bool) {
	for _, j := range s.Jobs {
		if j.State == JobRunning {
			return j, true
		}
	}
	return Job{}, false
}

// AliveOn returns the names of the alive members that compute on device,
// sorted.
func (s State) AliveOn(device string) []string {
	device = deviceOrCPU(device)
	var out []string
	for _, m := range s.Members {
		if m.State == MemberAlive && m.Device() == device {
			out = append(out, m.Name)
		}
	}
	return out
}

// EpochCandidates returns the alive members that belong in the next epoch,
// sorted: with a job running, those that compute on its device; otherwise
// every alive member. It is empty when a running job's device has no alive
// member: the job then waits, on its last epoch, for one to come.
func (s State) EpochCandidates() []string {
	if j, ok := s.RunningJob(); ok {
		return s.AliveOn(j.Spec.DeviceKind())
	}
	return s.Alive()
}

// runningJob is State.RunningJob on the FSM's own state.
func (s *fsmState) runningJob() (Job, bool) {
	var run Job
	found := false
	for _, j := range s.jobs {
		if j.State == JobRunning && (!found || j.Seq < run.Seq) {
			run, found = j, true
		}
	}
	return run, found
}

// checkEpochDevices is CommitEpoch's device rule: while a job runs, every
// member of the epoch computes on the job's device.
func checkEpochDevices(s *fsmState, c CommitEpoch) error {
	j, ok := s.runningJob()
	if !ok {
		return nil
	}
	device := j.Spec.DeviceKind()
	var wrong []string
	for _, name := range c.Members {
		if m, ok := s.members[name]; ok && m.Device() != device {
			wrong = append(wrong, name+" ("+m.Device()+")")
		}
	}
	if len(wrong) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s %d: job %s runs on %s, not on %s", ErrWrongDevice, c.Type(), c.ID, j.ID, device, strings.Join(wrong, ", "))
}
