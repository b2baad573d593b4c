package upstream

import (
	"sync"
	"sync/atomic"
	"time"
)

// Goodbyer is a long-lived exchange on a target (an upgraded WebSocket
// connection, an event stream) that can end itself in a way its client
// acts on: a WebSocket close frame, or the end of the stream at an event
// boundary, after which the client reconnects (to the new pool). Closing
// its connection instead, as a drain's timeout does, looks like a network
// failure to the client.
//
// Goodbye asks the exchange to end so. It must not block, may be called
// from any goroutine, and does nothing once the exchange has ended.
type Goodbyer interface{ Goodbye() }

// longLived is a target's registry of its long-lived exchanges.
type longLived struct {
	mu   sync.Mutex
	held map[Goodbyer]struct{}
	// bye is the farewell whose window is open on the target: exchanges
	// that start now are told at once.
	bye *Farewell
}

// Hold registers g as a long-lived exchange on t until Release, so a drain
// of t can say goodbye to it (SayGoodbye). When a goodbye window is open
// on t already, g is told at once.
func (t *Target) Hold(g Goodbyer) {
	ll := &t.lived
	ll.mu.Lock()
	if ll.held == nil {
		ll.held = make(map[Goodbyer]struct{})
	}
	ll.held[g] = struct{}{}
	bye := ll.bye
	ll.mu.Unlock()
	if bye != nil {
		bye.told.Add(1)
		g.Goodbye()
	}
}

// Release ends what Hold began.
func (t *Target) Release(g Goodbyer) {
	ll := &t.lived
	ll.mu.Lock()
	delete(ll.held, g)
	ll.mu.Unlock()
}

func (ll *longLived) open(f *Farewell, all []Goodbyer) []Goodbyer {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	ll.bye = f
	for g := range ll.held {
		all = append(all, g)
	}
	return all
}

func (ll *longLived) close(f *Farewell) {
	ll.mu.Lock()
	if ll.bye == f {
		ll.bye = nil
	}
	ll.mu.Unlock()
}

func (ll *longLived) holds(g Goodbyer) bool {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	_, ok := ll.held[g]
	return ok
}

// Farewell says goodbye to the long-lived exchanges of a set of targets,
// spread over a window that ends at a drain's deadline. See SayGoodbye.
type Farewell struct {
	ts   []*Target
	stop chan struct{}
	done chan struct{}
	once sync.Once
	told atomic.Int64
}

// SayGoodbye asks the long-lived exchanges held on ts to end (Goodbye),
// spread evenly over the spread before end, so their clients reconnect to
// the new pool a few at a time rather than all in the millisecond the
// drain's time runs out: the first at end-spread, the last a quarter of
// the spread before end (goodbyeMargin), so its close handshake is over
// before the drain closes what is left at end even on a busy machine, and
// the others evenly between.
// Exchanges that begin on ts once the window is open are told at once. It
// returns at once; Stop ends it.
//
// A spread of 0 or less, or an end already past, opens the window now and
// tells every exchange at once.
func SayGoodbye(ts []*Target, end time.Time, spread time.Duration) *Farewell {
	f := &Farewell{ts: ts, stop: make(chan struct{}), done: make(chan struct{})}
	start := end.Add(-max(spread, 0))
	if now := time.Now(); start.Before(now) {
		start = now
	}
	window := max(end.Sub(start), 0)
	go f.run(start, window-window/goodbyeMargin)
	return f
}

// goodbyeMargin: the last goodbye is told a quarter of the spread before
// the drain's end.
const goodbyeMargin = 4

func (f *Farewell) run(start time.Time, spread time.Duration) {
	defer close(f.done)
	if !f.waitUntil(start) {
		return
	}
	var all []Goodbyer
	owner := make([]*Target, 0, 8)
	for _, t := range f.ts {
		n := len(all)
		all = t.lived.open(f, all)
		for range len(all) - n {
			owner = append(owner, t)
		}
	}
	// Paced by what is left: a timer that fires late (a busy machine)
	// shortens the gaps that follow rather than release a burst.
	windowEnd := start.Add(spread)
	next := start
	for i, g := range all {
		if !f.waitUntil(next) {
			return
		}
		// One that ended by itself meanwhile is not counted.
		if owner[i].lived.holds(g) {
			f.told.Add(1)
			g.Goodbye()
		}
		if left := len(all) - 1 - i; left > 0 {
			next = time.Now().Add(time.Until(windowEnd) / time.Duration(left))
		}
	}
}

// waitUntil waits until t, or until Stop; it reports whether t came.
func (f *Farewell) waitUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-f.stop:
			return false
		default:
			return true
		}
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-f.stop:
		return false
	}
}

// Stop ends the farewell: no more goodbyes are said, and exchanges that
// begin on its targets from now on are left alone (a pool kept warm for
// rollback may serve again). It returns how many exchanges were told.
func (f *Farewell) Stop() int64 {
	f.once.Do(func() {
		close(f.stop)
		<-f.done
		for _, t := range f.ts {
			t.lived.close(f)
		}
	})
	return f.told.Load()
}
