package route

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/upstream"
)

func newPools(names ...string) []*upstream.Pool {
	var ps []*upstream.Pool
	for _, n := range names {
		ps = append(ps, upstream.NewPool(n, upstream.RoundRobin))
	}
	return ps
}

func poolNames(ps []*upstream.Pool) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name())
	}
	return out
}

func TestRoutesPoolsAndLost(t *testing.T) {
	ps := newPools("blue", "green", "purple")
	blue, green, purple := ps[0], ps[1], ps[2]
	var none *Routes
	if got := none.Routed(); len(got) != 0 {
		t.Fatalf("nil routing's pools = %v", poolNames(got))
	}
	r := &Routes{Stable: blue, Preview: blue}
	if got := poolNames(r.Routed()); len(got) != 1 || got[0] != "blue" {
		t.Fatalf("Pools of blue/blue = %v, want blue once", got)
	}
	r = &Routes{Stable: blue, Preview: green}
	for _, c := range []struct {
		next *Routes
		want []string
	}{
		{&Routes{Stable: blue, Preview: green}, nil},
		{&Routes{Stable: blue}, []string{"green"}},
		{&Routes{Stable: green}, []string{"blue"}},
		{&Routes{Stable: purple, Preview: blue}, []string{"green"}},
		{nil, []string{"blue", "green"}},
	} {
		got := poolNames(r.Lost(c.next))
		if len(got) != len(c.want) || (len(got) > 0 && !slices.Equal(got, c.want)) {
			t.Errorf("blue/green → %v: lost %v, want %v", poolNames(c.next.Routed()), got, c.want)
		}
	}
}

func TestAcquireWithoutRouting(t *testing.T) {
	s := NewService("web")
	if s.Name() != "web" || s.PreviewHosts().Name() != "web" {
		t.Fatalf("names %q, %q", s.Name(), s.PreviewHosts().Name())
	}
	if p := s.Acquire(); p != nil {
		t.Fatalf("Acquire before any routing = %s, want nil", p.Name())
	}
	blue := newPools("blue")[0]
	s.Apply(&Routes{})
	if p := s.Acquire(); p != nil || s.Active() != nil || blue.InFlight() != 0 {
		t.Fatal("Acquire with no stable pool handed out a pool")
	}
}

func TestApplyAndPreviewHosts(t *testing.T) {
	s := NewService("web")
	ps := newPools("blue", "green")
	blue, green := ps[0], ps[1]
	if old := s.Apply(&Routes{Stable: blue}); old != nil {
		t.Fatalf("first Apply replaced %v", old)
	}
	if p := s.Acquire(); p != blue || blue.InFlight() != 1 {
		t.Fatalf("Acquire = %v with blue in flight %d, want blue counted", p, blue.InFlight())
	}
	// Without a preview pool the preview hosts get the stable pool.
	if p := s.PreviewHosts().Acquire(); p != blue {
		t.Fatalf("preview hosts without a preview pool got %v, want blue", p)
	}
	blue.End()
	blue.End()
	old := s.Apply(&Routes{Stable: blue, Preview: green})
	if old.Stable != blue || old.Preview != nil {
		t.Fatalf("Apply returned %+v, want the blue routing", old)
	}
	if p := s.PreviewHosts().Acquire(); p != green {
		t.Fatalf("preview hosts got %v, want green", p)
	}
	green.End()
	if p := s.Acquire(); p != blue {
		t.Fatalf("service hosts got %v with a preview, want blue", p)
	}
	blue.End()
	if p, ok := s.Pool("green"); !ok || p != green {
		t.Fatalf("Pool(green) = %v, %v", p, ok)
	}
	s.Apply(&Routes{Stable: green})
	if _, ok := s.Pool("blue"); ok || s.Active() != green {
		t.Fatalf("after the switch: Pool(blue) found, or active %v", s.Active())
	}
}

// TestSwitchDrainsEveryRequest checks the swap's promise: once Apply has
// returned, every request counted on a pool the new routing dropped was
// dispatched before the swap, so a Drain of that pool that returns 0 leaves
// none behind. It holds for a pool that loses all its traffic (the stable
// pool switches) and for one that loses a share (the preview pool, which
// serves only the preview hosts, goes away while the stable pool stays).
//
// Acquirers take requests in a loop, half through the service's hosts and
// half through its preview hosts. A switcher cycles through routings; after
// each Apply it drains every pool the routing dropped and, once Drain has
// returned 0, marks that pool drained. The mark stays until every acquirer
// has finished a request since it was set, and is cleared just before a
// routing sends requests to the pool again. An acquirer handed a marked
// pool holds a request that the drain did not wait for.
//
// Without the second load in Acquire, an acquirer that loaded the old
// routing just before a swap counts itself on the dropped pool after the
// drain saw it empty, and the mark catches it. That needs the acquirer to
// stall between its load and its count while a swap and a drain run, so
// the catch is a matter of chance: under -race with two or more CPUs it
// happens within the run in practice; without -race, or on one CPU, rarely.
func TestSwitchDrainsEveryRequest(t *testing.T) {
	s := NewService("web")
	ps := newPools("blue", "green")
	blue, green := ps[0], ps[1]
	index := map[*upstream.Pool]int{blue: 0, green: 1}
	cycle := []*Routes{
		{Stable: blue},
		{Stable: blue, Preview: green}, // green gains the preview hosts
		{Stable: blue},                 // green loses its share
		{Stable: green},                // blue loses everything
		{Stable: green, Preview: blue},
		{Stable: green},
	}
	s.Apply(cycle[0])

	const (
		runFor      = 2 * time.Second
		maxSwitches = 100_000
		maxRequests = 10_000_000 // per acquirer
	)
	acquirers := max(8, 4*runtime.GOMAXPROCS(0))
	var (
		drained    [2]atomic.Bool
		stop       atomic.Bool
		violations atomic.Int64
		mu         sync.Mutex
		first      string
	)
	// progress[a] counts the requests acquirer a finished.
	progress := make([]atomic.Int64, acquirers)
	var wg sync.WaitGroup
	for a := range acquirers {
		view := s
		if a%2 == 1 {
			view = s.PreviewHosts()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load() && i < maxRequests; i++ {
				p := view.Acquire()
				if drained[index[p]].Load() {
					if violations.Add(1) == 1 {
						mu.Lock()
						first = p.Name()
						mu.Unlock()
					}
				}
				runtime.Gosched() // hold the request while others run
				p.End()
				progress[a].Add(1)
			}
		}()
	}

	deadline := time.Now().Add(runFor)
	inFlightAtSwitch := int64(0)
	done, shares := 0, 0
	seen := make([]int64, acquirers)
	for i := 0; i < maxSwitches && time.Now().Before(deadline); i++ {
		next := cycle[(i+1)%len(cycle)]
		for _, p := range next.Routed() {
			drained[index[p]].Store(false)
		}
		old := s.Apply(next)
		lost := old.Lost(next)
		for _, p := range lost {
			inFlightAtSwitch += p.InFlight()
			if next.Routed() != nil && p == old.Preview {
				shares++
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			n := p.Drain(ctx)
			cancel()
			if n != 0 {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("swap %d: %d requests still on %s after a 10s drain", i, n, p.Name())
			}
			drained[index[p]].Store(true)
		}
		// Keep the marks until every acquirer has finished a request since
		// they were set: one that loaded the old routing before the swap
		// and stalled has then checked the pool it was handed.
		for a := range seen {
			seen[a] = progress[a].Load()
		}
		for a := 0; a < acquirers && time.Now().Before(deadline); {
			if progress[a].Load() > seen[a] {
				a++
				continue
			}
			runtime.Gosched()
		}
		done++
	}
	stop.Store(true)
	wg.Wait()

	if v := violations.Load(); v > 0 {
		t.Fatalf("%d requests were counted on a pool after its drain returned 0 (first on %s): "+
			"Acquire handed out a pool the routing had dropped", v, first)
	}
	if done < 50 || shares == 0 {
		t.Fatalf("only %d swaps (%d preview shares dropped) in %s", done, shares, runFor)
	}
	var total int64
	for a := range progress {
		total += progress[a].Load()
	}
	var served int64
	for _, p := range ps {
		if n := p.InFlight(); n != 0 {
			t.Fatalf("%s has %d requests in flight after every acquirer stopped", p.Name(), n)
		}
		served += int64(p.Served())
	}
	if served != total {
		t.Fatalf("served %d, want the %d requests finished (an aborted acquire must not count as served)", served, total)
	}
	t.Logf("%d swaps (%d dropping a preview share), %d requests, %d in flight on dropped pools at the swaps", done, shares, total, inFlightAtSwitch)
}

func TestAcquireAllocs(t *testing.T) {
	s := NewService("web")
	s.Apply(&Routes{Stable: newPools("blue")[0]})
	if n := testing.AllocsPerRun(1000, func() {
		p := s.Acquire()
		p.End()
	}); n != 0 {
		t.Fatalf("Acquire/End allocates %.1f times, want 0", n)
	}
}
