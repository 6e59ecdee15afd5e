package cuda

import (
	"fmt"
	"unsafe"
)

// This file is what overlaps copies with compute: pinned host memory, a
// second stream for copies, and events that order the two streams.

// HostBuffer is page-locked host memory (cuMemHostAlloc), which copies
// to and from the device can read and write while the host goes on.
type HostBuffer struct {
	ptr uintptr
	F32 []float32 // the memory, as float32s
}

// AllocHostF32 allocates n float32s of pinned host memory. Free it with
// FreeHost; the slice must not be used afterwards.
func (d *Device) AllocHostF32(n int, what string) (*HostBuffer, error) {
	p := new(uintptr)
	bytes := uintptr(max(n, 1)) * 4
	if err := checkResult("cuMemHostAlloc", ccall(sym.cuMemHostAlloc, uintptr(unsafe.Pointer(p)), bytes, 0)); err != nil {
		return nil, d.named(fmt.Errorf("pinned host memory for %s (%d bytes): %w", what, bytes, err))
	}
	ptr := *(*unsafe.Pointer)(unsafe.Pointer(p))
	return &HostBuffer{ptr: *p, F32: unsafe.Slice((*float32)(ptr), n)}, nil
}

// FreeHost frees pinned memory from AllocHostF32.
func (d *Device) FreeHost(h *HostBuffer) {
	if h == nil || h.ptr == 0 {
		return
	}
	ccall(sym.cuMemFreeHost, h.ptr)
	h.ptr, h.F32 = 0, nil
}

// Event marks a point in a stream's work.
type Event struct{ h uintptr }

// NewEvent creates an event (without timing, the cheap kind).
func (d *Device) NewEvent() (Event, error) {
	e := new(uintptr)
	const disableTiming = 2
	if err := checkResult("cuEventCreate", ccall(sym.cuEventCreate, uintptr(unsafe.Pointer(e)), disableTiming)); err != nil {
		return Event{}, d.named(err)
	}
	return Event{h: *e}, nil
}

// DestroyEvent frees an event.
func (d *Device) DestroyEvent(e Event) {
	if e.h != 0 {
		ccall(sym.cuEventDestroy, e.h)
	}
}

// copyStream returns the device's stream for copies, made on first use.
func (d *Device) copyStreamHandle() (uintptr, error) {
	if d.copyStream != 0 {
		return d.copyStream, nil
	}
	s := new(uintptr)
	if err := checkResult("cuStreamCreate", ccall(sym.cuStreamCreate, uintptr(unsafe.Pointer(s)), 0)); err != nil {
		return 0, d.named(err)
	}
	d.copyStream = *s
	return d.copyStream, nil
}

// CopyToHostAfter queues, on the copy stream, a copy of n float32s from
// src to pinned host memory dst that starts when the compute stream has
// done everything queued so far (it records before on it), and records
// done when the copy has finished. The compute stream goes on meanwhile.
func (d *Device) CopyToHostAfter(dst []float32, src Buffer, n int, before, done Event) error {
	if n == 0 {
		return d.named(checkResult("cuEventRecord", ccall(sym.cuEventRecord, done.h, d.stream)))
	}
	if len(dst) < n || int64(n)*4 > src.Bytes {
		panic(fmt.Sprintf("cuda: CopyToHostAfter of %d floats into %d from a buffer of %d bytes", n, len(dst), src.Bytes))
	}
	cs, err := d.copyStreamHandle()
	if err != nil {
		return err
	}
	if err := checkResult("cuEventRecord", ccall(sym.cuEventRecord, before.h, d.stream)); err != nil {
		return d.named(err)
	}
	if err := checkResult("cuStreamWaitEvent", ccall(sym.cuStreamWaitEvent, cs, before.h, 0)); err != nil {
		return d.named(err)
	}
	if err := checkResult("cuMemcpyDtoHAsync", ccall(sym.cuMemcpyDtoHAsync, uintptr(unsafe.Pointer(&dst[0])), src.Ptr, uintptr(n)*4, cs)); err != nil {
		return d.named(err)
	}
	return d.named(checkResult("cuEventRecord", ccall(sym.cuEventRecord, done.h, cs)))
}

// WaitEvent blocks until e has happened. It may be called from another
// goroutine than the one driving the device, between its own Lock and
// unlock; it touches nothing else of the Device.
func (d *Device) WaitEvent(e Event) error {
	return d.named(checkResult("cuEventSynchronize", ccall(sym.cuEventSynchronize, e.h)))
}
