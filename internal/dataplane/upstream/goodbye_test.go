package upstream

import (
	"sync"
	"testing"
	"time"
)

// goodbyeRecorder is a long-lived exchange that records when it was told
// goodbye.
type goodbyeRecorder struct {
	mu   sync.Mutex
	told []time.Time
	ch   chan struct{}
}

func newRecorder() *goodbyeRecorder { return &goodbyeRecorder{ch: make(chan struct{}, 8)} }

func (g *goodbyeRecorder) Goodbye() {
	g.mu.Lock()
	g.told = append(g.told, time.Now())
	g.mu.Unlock()
	g.ch <- struct{}{}
}

func (g *goodbyeRecorder) times() []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]time.Time(nil), g.told...)
}

// TestSayGoodbyeSpreadsOverTheWindow: the exchanges held on the targets
// are told once each, none before the window opens, the first at its
// start and the others spread over it rather than at one instant;
// exchanges released before their turn are not told; one that begins
// while the window is open is told at once; after Stop, nothing is.
func TestSayGoodbyeSpreadsOverTheWindow(t *testing.T) {
	const (
		n      = 10
		before = 150 * time.Millisecond // from now until the window opens
		spread = 500 * time.Millisecond
	)
	ts := []*Target{NewTarget(TargetOptions{Addr: "127.0.0.1:1"}), NewTarget(TargetOptions{Addr: "127.0.0.1:2"})}
	var gs []*goodbyeRecorder
	for i := range n {
		g := newRecorder()
		ts[i%2].Hold(g)
		gs = append(gs, g)
	}
	gone := newRecorder()
	ts[0].Hold(gone)
	ts[0].Release(gone)

	start := time.Now()
	end := start.Add(before + spread)
	f := SayGoodbye(ts, end, spread)
	for i, g := range gs {
		select {
		case <-g.ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("exchange %d was not told goodbye", i)
		}
	}
	late := newRecorder()
	ts[1].Hold(late)
	select {
	case <-late.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("an exchange that began during the window was not told at once")
	}
	if told := f.Stop(); told != n+1 {
		t.Errorf("Stop reports %d told, want %d", told, n+1)
	}
	after := newRecorder()
	ts[0].Hold(after)
	if len(after.times()) != 0 || len(gone.times()) != 0 {
		t.Errorf("told after Stop %d, told after Release %d; want 0 and 0", len(after.times()), len(gone.times()))
	}
	var first, last time.Time
	for i, g := range gs {
		tt := g.times()
		if len(tt) != 1 {
			t.Fatalf("exchange %d told %d times, want once", i, len(tt))
		}
		if tt[0].Before(start.Add(before)) {
			t.Errorf("exchange %d told %s after the start, before the window opened at %s", i, tt[0].Sub(start), before)
		}
		if first.IsZero() || tt[0].Before(first) {
			first = tt[0]
		}
		if tt[0].After(last) {
			last = tt[0]
		}
	}
	// Loosely: the machine may be busy, but n goodbyes over the window
	// must not come in one burst.
	if span := last.Sub(first); span < spread/3 {
		t.Errorf("goodbyes spanned %s, want them spread over about %s", span, spread)
	}
	t.Logf("%d goodbyes from %s to %s after the start (window %s to %s)", n, first.Sub(start), last.Sub(start), before, before+spread)
}

// TestSayGoodbyeStopBeforeTheWindow: a drain that ends before its window
// opens tells nobody.
func TestSayGoodbyeStopBeforeTheWindow(t *testing.T) {
	tg := NewTarget(TargetOptions{Addr: "127.0.0.1:1"})
	g := newRecorder()
	tg.Hold(g)
	f := SayGoodbye([]*Target{tg}, time.Now().Add(time.Hour), time.Minute)
	if told := f.Stop(); told != 0 || len(g.times()) != 0 {
		t.Fatalf("told %d (%d recorded), want none", told, len(g.times()))
	}
}
