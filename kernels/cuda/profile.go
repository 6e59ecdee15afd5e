package cuda

import (
	"fmt"
	"sort"
	"strings"
	"unsafe"
)

// A kernel-level profile without external tools: while profiling is on,
// every launch and GEMM is bracketed by timing events on the stream, and
// ProfileReport adds up the device time per kernel (GEMMs by shape). It
// serialises nothing, but each event costs a little host time, so profile
// separately from timing.

// profiler holds the events of the launches since StartProfile.
type profiler struct {
	pool    []Event // timing events, reused
	used    int
	entries []profEntry
}

type profEntry struct {
	name       string
	start, end Event
}

// StartProfile turns per-kernel timing on (and clears what was recorded).
func (d *Device) StartProfile() { d.prof = &profiler{} }

// ProfileLine is one kernel's total in a profile.
type ProfileLine struct {
	Name  string  `json:"name"`
	Calls int     `json:"calls"`
	MS    float64 `json:"ms"`
}

// StopProfile waits for the device, turns timing off and returns the
// device time per kernel name since StartProfile, largest first.
func (d *Device) StopProfile() ([]ProfileLine, error) {
	p := d.prof
	d.prof = nil
	if p == nil {
		return nil, nil
	}
	if err := d.Sync(); err != nil {
		return nil, err
	}
	agg := map[string]*ProfileLine{}
	for _, e := range p.entries {
		ms := new(float32)
		if err := checkResult("cuEventElapsedTime", ccall(sym.cuEventElapsedTime, uintptr(unsafe.Pointer(ms)), e.start.h, e.end.h)); err != nil {
			return nil, d.named(err)
		}
		l := agg[e.name]
		if l == nil {
			l = &ProfileLine{Name: e.name}
			agg[e.name] = l
		}
		l.Calls++
		l.MS += float64(*ms)
	}
	for _, e := range p.pool {
		d.DestroyEvent(e)
	}
	var out []ProfileLine
	for _, l := range agg {
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MS > out[j].MS })
	return out, nil
}

// FormatProfile renders a profile as a table, with each line's share.
func FormatProfile(lines []ProfileLine, steps int) string {
	var total float64
	for _, l := range lines {
		total += l.MS
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-60s %7s %10s %6s\n", "kernel", "calls", "ms/step", "share")
	for _, l := range lines {
		fmt.Fprintf(&b, "%-60s %7d %10.3f %5.1f%%\n", l.Name, l.Calls/max(steps, 1), l.MS/float64(max(steps, 1)), 100*l.MS/total)
	}
	fmt.Fprintf(&b, "%-60s %7s %10.3f\n", "total device time", "", total/float64(max(steps, 1)))
	return b.String()
}

// profBegin records a start event for name when profiling; profEnd its end.
func (d *Device) profBegin(name string) {
	p := d.prof
	if p == nil {
		return
	}
	if p.used+2 > len(p.pool) {
		for range 2 {
			e := new(uintptr)
			if uint32(ccall(sym.cuEventCreate, uintptr(unsafe.Pointer(e)), 0)) != 0 {
				d.prof = nil // no events: stop profiling rather than mis-attribute
				return
			}
			p.pool = append(p.pool, Event{h: *e})
		}
	}
	s, e := p.pool[p.used], p.pool[p.used+1]
	p.used += 2
	ccall(sym.cuEventRecord, s.h, d.stream)
	p.entries = append(p.entries, profEntry{name: name, start: s, end: e})
}

func (d *Device) profEnd() {
	p := d.prof
	if p == nil || len(p.entries) == 0 {
		return
	}
	ccall(sym.cuEventRecord, p.entries[len(p.entries)-1].end.h, d.stream)
}
