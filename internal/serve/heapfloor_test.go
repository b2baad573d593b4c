package serve

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestGOGCForAHeapFloor(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		live, floor uint64
		want        int
	}{
		{0, 32 * mb, 800},       // nothing live yet: the runtime's minimum heap scaled to the floor
		{1 * mb, 32 * mb, 800},  // (31/1)*100 would put the minimum heap at 124 MB
		{4 * mb, 32 * mb, 700},  // 4 MB live + 700% = 32 MB
		{8 * mb, 32 * mb, 300},  // 8 + 24 = 32
		{15 * mb, 32 * mb, 113}, // just under half the floor
		{16 * mb, 32 * mb, 100}, // half the floor: the default
		{500 * mb, 32 * mb, 100},
		{30 * mb, 64 * mb, 113},
	} {
		if got := gogcFor(c.live, c.floor); got != c.want {
			t.Errorf("gogcFor(live %d MB, floor %d MB) = %d, want %d", c.live/mb, c.floor/mb, got, c.want)
		}
	}
}

// readGC returns the collector's cycles so far and GOGC now.
func readGC(t *testing.T) (cycles uint64, gogc uint64) {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

// garbage allocates n bytes in 128 KiB pieces that die at once (more
// than the compiler puts on the stack).
func garbage(n int) {
	for i := 0; i < n>>17; i++ {
		b := make([]byte, 1<<17)
		b[len(b)-1] = byte(i)
		runtime.KeepAlive(b)
	}
}

// TestHeapFloorSpacesCycles allocates the same garbage with and without a
// floor: with it, cycles start only every floor's worth of heap; once the
// live heap is past half the floor, GOGC is the default again; stopped,
// the default stays.
func TestHeapFloorSpacesCycles(t *testing.T) {
	const floor = 64 << 20
	const alloc = 256 << 20
	runtime.GC()
	c0, gogc := readGC(t)
	if gogc != gogcDefault {
		t.Skipf("GOGC is %d here, not the default this test compares against", gogc)
	}
	garbage(alloc)
	c1, _ := readGC(t)
	without := c1 - c0

	tunes := make(chan int, 64)
	f := startHeapFloor(floor, func(_ uint64, gogc int) {
		select {
		case tunes <- gogc:
		default:
		}
	})
	defer f.stop()
	if p := <-tunes; p <= gogcDefault {
		t.Fatalf("with a small live heap the floor set GOGC to %d, want more than %d", p, gogcDefault)
	}
	garbage(alloc)
	c2, _ := readGC(t)
	with := c2 - c1
	t.Logf("cycles while allocating %d MB: %d at GOGC=100, %d with a %d MB floor", alloc>>20, without, with, floor>>20)
	// How many cycles run without the floor depends on what earlier tests
	// left live (34 in a whole package run, about 90 alone), so this asks
	// for a third of them, not a tenth; the first bound shows the floor.
	if with > alloc/floor+2 || with*3 > without {
		t.Errorf("with a %d MB floor %d cycles ran while allocating %d MB (%d without): want at most %d and at most a third of those without", floor>>20, with, alloc>>20, without, alloc/floor+2)
	}

	// A live heap of more than half the floor: after the next cycle, the
	// tuner (re-armed at every cycle) puts GOGC back to the default.
	live := make([]byte, floor/2+(1<<20))
	for i := range live {
		live[i] = 1
	}
	deadline := time.After(10 * time.Second)
	for back := false; !back; {
		runtime.GC()
		select {
		case p := <-tunes:
			back = p == gogcDefault
		case <-deadline:
			_, gogc := readGC(t)
			t.Fatalf("with %d MB live and a %d MB floor GOGC stayed at %d, want %d", len(live)>>20, floor>>20, gogc, gogcDefault)
		}
	}
	if _, gogc := readGC(t); gogc != gogcDefault {
		t.Errorf("GOGC %d after the tuner set the default", gogc)
	}
	runtime.KeepAlive(live)
	live = nil

	// Small again, GOGC rises; stopped, it is the default and stays.
	for up := false; !up; {
		runtime.GC()
		select {
		case p := <-tunes:
			up = p > gogcDefault
		case <-deadline:
			t.Fatal("the live heap shrank but the tuner did not raise GOGC again")
		}
	}
	f.stop()
	if _, gogc := readGC(t); gogc != gogcDefault {
		t.Errorf("GOGC %d after stop, want %d", gogc, gogcDefault)
	}
	runtime.GC()
	runtime.GC()
	if _, gogc := readGC(t); gogc != gogcDefault {
		t.Errorf("GOGC %d after stop and two cycles, want %d (a stopped tuner must not set it)", gogc, gogcDefault)
	}
}
