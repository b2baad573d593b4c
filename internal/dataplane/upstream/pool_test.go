package upstream

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// newPool returns a pool of targets named a0, a1, ... in the given states.
// The addresses are never dialed.
func newPool(b Balance, states ...State) (*Pool, []*Target) {
	p := NewPool("blue", b)
	specs := make([]TargetSpec, len(states))
	for i := range states {
		specs[i] = TargetSpec{Addr: fmt.Sprintf("a%d", i)}
	}
	i := 0
	p.SetTargets(specs, func(s TargetSpec) *Target {
		t := NewTarget(TargetOptions{Addr: s.Addr, Label: s.Label, Initial: states[i]})
		i++
		return t
	})
	return p, p.Targets()
}

// countPicks picks n times and counts the targets chosen by address; a nil
// pick counts under "".
func countPicks(p *Pool, n int, tried []*Target) map[string]int {
	got := map[string]int{}
	for range n {
		t := p.Pick(tried)
		if t == nil {
			got[""]++
			continue
		}
		got[t.Addr()]++
	}
	return got
}

func assertCounts(t *testing.T, got, want map[string]int) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("picks = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("picks = %v, want %v", got, want)
		}
	}
}

func TestPickEmptyPool(t *testing.T) {
	for _, b := range []Balance{RoundRobin, LeastConn} {
		p := NewPool("blue", b)
		if got := p.Pick(nil); got != nil {
			t.Fatalf("%v: Pick on an empty pool = %v, want nil", b, got.Addr())
		}
	}
}

func TestPickRoundRobinEven(t *testing.T) {
	p, _ := newPool(RoundRobin, Up, Up, Up)
	assertCounts(t, countPicks(p, 3000, nil), map[string]int{"a0": 1000, "a1": 1000, "a2": 1000})
}

// A target that is down must not hand its share to the one after it: the
// Up targets share the traffic evenly.
func TestPickRoundRobinEvenAroundDownTargets(t *testing.T) {
	p, _ := newPool(RoundRobin, Up, Down, Up, Unknown, Up)
	assertCounts(t, countPicks(p, 3000, nil), map[string]int{"a0": 1000, "a2": 1000, "a4": 1000})

	p, _ = newPool(RoundRobin, Up, Down, Up)
	assertCounts(t, countPicks(p, 3000, nil), map[string]int{"a0": 1500, "a2": 1500})
}

func TestPickSkipsDownAndUnknown(t *testing.T) {
	p, ts := newPool(RoundRobin, Down, Unknown, Up)
	assertCounts(t, countPicks(p, 100, nil), map[string]int{"a2": 100})

	// A verdict change is seen by the next pick.
	ts[2].ReportFailure(fmt.Errorf("connection refused"))
	ts[0].state.Store(int32(Up))
	assertCounts(t, countPicks(p, 100, nil), map[string]int{"a0": 100})
}

// With no target Up, the pool still tries the others (evenly) rather than
// fail the request without trying.
func TestPickFallsBackWhenNoneUp(t *testing.T) {
	for _, b := range []Balance{RoundRobin, LeastConn} {
		p, _ := newPool(b, Down, Unknown, Down)
		assertCounts(t, countPicks(p, 300, nil), map[string]int{"a0": 100, "a1": 100, "a2": 100})
	}
}

func TestPickTried(t *testing.T) {
	for _, b := range []Balance{RoundRobin, LeastConn} {
		t.Run(b.String(), func(t *testing.T) {
			p, ts := newPool(b, Up, Up, Down)
			// a0 failed: only a1 is Up and untried.
			assertCounts(t, countPicks(p, 50, ts[:1]), map[string]int{"a1": 50})
			// Every Up target failed: the Down one is tried rather than none.
			assertCounts(t, countPicks(p, 50, ts[:2]), map[string]int{"a2": 50})
			// Every target failed: nil.
			assertCounts(t, countPicks(p, 50, []*Target{ts[2], ts[0], ts[1]}), map[string]int{"": 50})
		})
	}
}

func TestPickLeastConn(t *testing.T) {
	p, ts := newPool(LeastConn, Up, Up, Up)
	for range 3 {
		ts[0].Begin()
	}
	ts[1].Begin()
	for range 2 {
		ts[2].Begin()
	}
	assertCounts(t, countPicks(p, 100, nil), map[string]int{"a1": 100})

	// The least loaded target that is Down is skipped.
	ts[1].ReportFailure(fmt.Errorf("refused"))
	assertCounts(t, countPicks(p, 100, nil), map[string]int{"a2": 100})

	// Finishing requests moves the choice.
	ts[0].End(true)
	ts[0].End(true)
	ts[0].End(true)
	assertCounts(t, countPicks(p, 100, nil), map[string]int{"a0": 100})

	// The least loaded target already tried is skipped for the next least.
	assertCounts(t, countPicks(p, 100, ts[:1]), map[string]int{"a2": 100})
}

func TestPickLeastConnTiesRotate(t *testing.T) {
	p, ts := newPool(LeastConn, Up, Up, Up, Up)
	assertCounts(t, countPicks(p, 400, nil), map[string]int{"a0": 100, "a1": 100, "a2": 100, "a3": 100})

	// A Down target in between does not tilt the rotation to the one after it.
	ts[1].ReportFailure(fmt.Errorf("refused"))
	assertCounts(t, countPicks(p, 300, nil), map[string]int{"a0": 100, "a2": 100, "a3": 100})

	// Only the tied least loaded ones share.
	ts[3].Begin()
	assertCounts(t, countPicks(p, 400, nil), map[string]int{"a0": 200, "a2": 200})
}

// Under concurrent picks every pick still returns an Up target of the pool.
func TestPickConcurrent(t *testing.T) {
	p, ts := newPool(LeastConn, Up, Down, Up, Up)
	done := make(chan map[*Target]int)
	for range 8 {
		go func() {
			got := map[*Target]int{}
			for range 2000 {
				tg := p.Pick(nil)
				tg.Begin()
				got[tg]++
				tg.End(true)
			}
			done <- got
		}()
	}
	total := 0
	for range 8 {
		for tg, n := range <-done {
			if tg == ts[1] {
				t.Fatalf("the Down target was picked %d times", n)
			}
			total += n
		}
	}
	if total != 8*2000 {
		t.Fatalf("picked %d times, want %d", total, 8*2000)
	}
}

func TestPickAllocs(t *testing.T) {
	for _, b := range []Balance{RoundRobin, LeastConn, PeakEWMA} {
		p, ts := newPool(b, Up, Down, Up, Up)
		tried := ts[:1]
		if n := testing.AllocsPerRun(1000, func() { p.Pick(tried) }); n != 0 {
			t.Errorf("%v: Pick allocates %.1f times, want 0", b, n)
		}
	}
}

func TestParseBalance(t *testing.T) {
	for in, want := range map[string]Balance{"": DefaultBalance, "round_robin": RoundRobin, "least_conn": LeastConn, "peak_ewma": PeakEWMA} {
		got, ok := ParseBalance(in)
		if !ok || got != want {
			t.Errorf("ParseBalance(%q) = %v, %v; want %v, true", in, got, ok, want)
		}
		if in != "" && got.String() != in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), in)
		}
	}
	if _, ok := ParseBalance("random"); ok {
		t.Error(`ParseBalance("random") accepted`)
	}
	p := NewPool("green", RoundRobin)
	p.SetBalance(LeastConn)
	if p.Balance() != LeastConn || p.Name() != "green" {
		t.Errorf("pool = %q %v, want green least_conn", p.Name(), p.Balance())
	}
}

func TestSetTargetsKeepsUnchanged(t *testing.T) {
	b := newBackend(t)
	p := NewPool("blue", RoundRobin)
	var made []string
	mk := func(s TargetSpec) *Target {
		made = append(made, s.Addr)
		return NewTarget(TargetOptions{Addr: s.Addr, Label: s.Label, Initial: Up})
	}
	other := "127.0.0.1:1"
	if removed := p.SetTargets([]TargetSpec{{Addr: other}, {Addr: b.addr, Label: "web-1"}}, mk); len(removed) != 0 {
		t.Fatalf("first SetTargets removed %d targets", len(removed))
	}
	kept := p.Targets()[1]
	gone := p.Targets()[0]
	if kept.Label() != "web-1" || gone.Label() != other {
		t.Fatalf("labels = %q, %q; want web-1 and the address", kept.Label(), gone.Label())
	}

	// Give the kept target history: a verdict, counters, an idle connection.
	kept.Begin()
	kept.Begin()
	kept.End(true)
	kept.ReportProbe(nil, Thresholds{Healthy: 5, Unhealthy: 5})
	c, err := kept.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	kept.Put(c)

	made = nil
	removed := p.SetTargets([]TargetSpec{{Addr: b.addr, Label: "web-1b"}, {Addr: "127.0.0.1:2"}}, mk)
	if len(removed) != 1 || removed[0] != gone {
		t.Fatalf("removed = %v, want the target of %s", removed, other)
	}
	if len(made) != 1 || made[0] != "127.0.0.1:2" {
		t.Fatalf("new targets made for %v, want only 127.0.0.1:2", made)
	}
	ts := p.Targets()
	if len(ts) != 2 || ts[0] != kept || ts[1].Addr() != "127.0.0.1:2" {
		t.Fatalf("targets = %v, want the kept target then 127.0.0.1:2", ts)
	}
	if kept.InFlight() != 1 || kept.Served() != 1 || kept.ConsecutivePasses() != 1 {
		t.Fatalf("kept target lost its counters: in flight %d, served %d, passes %d",
			kept.InFlight(), kept.Served(), kept.ConsecutivePasses())
	}
	if open, idle := kept.Conns(); open != 1 || idle != 1 {
		t.Fatalf("kept target conns = %d open, %d idle; want 1, 1", open, idle)
	}
	if kept.Label() != "web-1b" {
		t.Fatalf("label = %q, want the new one web-1b", kept.Label())
	}
	if c2, err := kept.Get(context.Background()); err != nil || c2 != c || !c2.Reused {
		t.Fatalf("Get after SetTargets = %p, %v; want the idle connection %p reused", c2, err, c)
	}

	// An empty label keeps the one the target has.
	p.SetTargets([]TargetSpec{{Addr: b.addr}}, mk)
	if kept.Label() != "web-1b" {
		t.Fatalf("label = %q after a spec without one, want web-1b kept", kept.Label())
	}
}

// Labels change on reload while health checks and status read them.
func TestSetTargetsLabelConcurrent(t *testing.T) {
	p := NewPool("blue", RoundRobin)
	mk := func(s TargetSpec) *Target { return NewTarget(TargetOptions{Addr: s.Addr, Label: s.Label}) }
	p.SetTargets([]TargetSpec{{Addr: "127.0.0.1:1", Label: "x"}}, mk)
	tg := p.Targets()[0]
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			p.SetTargets([]TargetSpec{{Addr: "127.0.0.1:1", Label: fmt.Sprint("web-", i)}}, mk)
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-done:
			if got := tg.Label(); got != "web-999" {
				t.Fatalf("label = %q, want web-999", got)
			}
			if got := tg.Status().Label; got != "web-999" {
				t.Fatalf("status label = %q, want web-999", got)
			}
			return
		default:
		}
		if tg.Label() == "" || tg.Status().Label == "" {
			t.Fatal("empty label while labels change")
		}
	}
}

func TestPoolCounters(t *testing.T) {
	p := NewPool("blue", RoundRobin)
	p.Begin()
	p.Begin()
	if p.InFlight() != 2 || p.Served() != 0 {
		t.Fatalf("after 2 Begin: in flight %d, served %d", p.InFlight(), p.Served())
	}
	p.End()
	if p.InFlight() != 1 || p.Served() != 1 {
		t.Fatalf("after End: in flight %d, served %d", p.InFlight(), p.Served())
	}
	p.Abort()
	if p.InFlight() != 0 || p.Served() != 1 {
		t.Fatalf("after Abort: in flight %d, served %d; an aborted request is not served", p.InFlight(), p.Served())
	}
}

func TestDrainIdleReturnsAtOnce(t *testing.T) {
	p := NewPool("blue", RoundRobin)
	p.Begin()
	p.End()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if n := p.Drain(ctx); n != 0 {
		t.Fatalf("Drain = %d, want 0", n)
	}
	if ctx.Err() != nil {
		t.Fatal("Drain of an idle pool waited for its context")
	}
}

// drainAsync starts Drain and waits until it is waiting.
func drainAsync(t *testing.T, p *Pool, ctx context.Context) <-chan int64 {
	t.Helper()
	res := make(chan int64, 1)
	go func() { res <- p.Drain(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !p.draining.Load() {
		if time.Now().After(deadline) {
			t.Fatal("Drain did not start")
		}
		runtime.Gosched()
	}
	return res
}

func TestDrainWaitsForRequests(t *testing.T) {
	p := NewPool("blue", RoundRobin)
	p.Begin()
	p.Begin()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := drainAsync(t, p, ctx)

	p.End()
	// A request that begins and is aborted (dispatched elsewhere) while the
	// pool drains must not end the drain early.
	p.Begin()
	p.Abort()
	select {
	case n := <-res:
		t.Fatalf("Drain returned %d with a request in flight", n)
	default:
	}

	p.End()
	select {
	case n := <-res:
		if n != 0 {
			t.Fatalf("Drain = %d, want 0", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return when the last request ended")
	}
	if ctx.Err() != nil {
		t.Fatal("Drain returned by its context, not by the request ending")
	}
	// A drained pool serves again and drains again.
	p.Begin()
	res = drainAsync(t, p, ctx)
	p.End()
	if n := <-res; n != 0 {
		t.Fatalf("second Drain = %d, want 0", n)
	}
}

func TestDrainTimeout(t *testing.T) {
	p := NewPool("blue", RoundRobin)
	for range 3 {
		p.Begin()
	}
	p.End()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if n := p.Drain(ctx); n != 2 {
		t.Fatalf("Drain at timeout = %d, want the 2 still in flight", n)
	}
	if ctx.Err() == nil {
		t.Fatal("Drain returned before its context ended")
	}
	p.End()
	p.End()
	if n := p.Drain(context.Background()); n != 0 {
		t.Fatalf("Drain after the requests ended = %d, want 0", n)
	}
}

func TestPoolCloseIdleAndAll(t *testing.T) {
	b := newBackend(t)
	p := NewPool("blue", RoundRobin)
	p.SetTargets([]TargetSpec{{Addr: b.addr}}, func(s TargetSpec) *Target {
		return NewTarget(TargetOptions{Addr: s.Addr, Initial: Up})
	})
	tg := p.Targets()[0]
	c1, err := tg.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := tg.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tg.Put(c2)
	if n := p.CloseIdle(); n != 1 {
		t.Fatalf("CloseIdle = %d, want 1", n)
	}
	if n := p.CloseAll(); n != 1 {
		t.Fatalf("CloseAll = %d, want 1 (the connection in use)", n)
	}
	if _, err := c1.Write([]byte("x")); err == nil {
		t.Fatal("write on a connection closed by CloseAll succeeded")
	}
	b.waitClosed(t, 2)
}
