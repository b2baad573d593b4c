package serve

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// With GOGC at its default of 100 the collector runs each time the heap
// doubles, and a proxy's live heap is small: a few megabytes at a few
// thousand requests per second. Handshakes allocate tens of kilobytes each,
// so under new TLS connections the collector ran 34 times a second, 6-13 ms
// each, and a handshake caught in a cycle (its write barriers and assists,
// a processor taken by the mark worker) sent its flight late; a client that
// waits for it polling, as wrk does, burns the CPU the proxy then lacks.
// Measured in paired runs (wrk -c32, Connection: close, 2 cores): the same
// binary did 2,180-2,530 handshakes a second with GOGC=100 and 2,570-3,020
// with the heap allowed to reach 32 MB before a cycle, nginx 2,270-2,610.
//
// A fixed higher GOGC would do the same for a small heap but multiply a
// large one (10,000 idle TLS connections hold tens of megabytes, and their
// memory is a figure users compare). So the heap gets a floor instead: while
// the live heap is small, GOGC is raised so that the next cycle starts at
// about the floor; once the live heap is half the floor or more, GOGC is
// the default again. GOMEMLIMIT, when set, still bounds the total.
//
// Go has no setting for this (GOGC scales with the live heap, GOMEMLIMIT
// only makes the collector run sooner), hence this small tuner: after each
// cycle it reads the live heap and sets GOGC for the next one.

// DefaultHeapFloor is the heap size below which the collector does not
// start a cycle, as kept by KeepHeapFloor.
const DefaultHeapFloor = 32 << 20

// gogcDefault is GOGC when nothing sets it.
const gogcDefault = 100

// heapMinimum is the runtime's smallest heap goal at the default GOGC; it
// scales with GOGC, so it bounds the percentage for an almost empty heap
// (at GOGC=1000 no cycle would start before 40 MB).
const heapMinimum = 4 << 20

// gogcFor is the GOGC that starts the next cycle at about floor bytes of
// heap after a cycle left live bytes, and never less than the default.
func gogcFor(live, floor uint64) int {
	if live >= floor/2 {
		return gogcDefault
	}
	most := floor * 100 / heapMinimum
	if live == 0 {
		return int(max(most, gogcDefault))
	}
	return int(max(min((floor-live)*100/live, most), gogcDefault))
}

// heapFloor is the tuner: a cleanup attached to an object allocated for
// the purpose runs once the collector has found it unreachable, i.e. after
// each cycle, and arms the next one.
type heapFloor struct {
	floor  uint64
	sample []metrics.Sample

	// tuned, when set, is told each live heap seen and the GOGC set for
	// it, with mu held (tests).
	tuned func(live uint64, gogc int)

	mu      sync.Mutex
	stopped bool
	gogc    int // what it set last
}

// gcCycle is the object whose collection marks the end of a cycle. It
// holds a pointer so that it is not batched with other tiny objects,
// which would keep it alive for as long as they are.
type gcCycle struct{ _ *byte }

// KeepHeapFloor keeps the collector from starting cycles while the heap
// is smaller than floor bytes (see the comment above), until stop is
// called, which puts GOGC back to the default. GOGC is process-wide: the
// command that owns the process calls it once, and not when the operator
// set GOGC.
func KeepHeapFloor(floor uint64) (stop func()) {
	return startHeapFloor(floor, nil).stop
}

func startHeapFloor(floor uint64, tuned func(live uint64, gogc int)) *heapFloor {
	f := &heapFloor{floor: floor, gogc: gogcDefault, tuned: tuned, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	f.tune()
	f.arm()
	return f
}

func (f *heapFloor) arm() {
	runtime.AddCleanup(&gcCycle{}, func(f *heapFloor) {
		if f.tune() {
			f.arm()
		}
	}, f)
}

// tune sets GOGC for the live heap now; it reports false once stopped.
func (f *heapFloor) tune() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	metrics.Read(f.sample)
	var live uint64
	if f.sample[0].Value.Kind() == metrics.KindUint64 {
		live = f.sample[0].Value.Uint64()
	}
	if p := gogcFor(live, f.floor); p != f.gogc {
		debug.SetGCPercent(p)
		f.gogc = p
	}
	if f.tuned != nil {
		f.tuned(live, f.gogc)
	}
	return true
}

func (f *heapFloor) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.stopped = true
		debug.SetGCPercent(gogcDefault)
	}
}
