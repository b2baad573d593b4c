package serve

import (
	"runtime"
	"time"
)

// Each event loop waits in epoll_wait as a system call, which keeps its
// processor until the runtime's monitor takes it back; goroutines (health
// checks, the admin API, connections the loops hand over) then waited
// milliseconds for one. Processors of their own for the loops keep those
// waits short: in paired runs p99 of handed-over POSTs went from 7-13 ms to
// 5.6-6.4 ms, GETs on the loops from 1.0-1.1x to 1.16-1.22x nginx's
// requests per second, and HTTP/1.1 over TLS lost a fifth without them.
//
// But while the loops serve nothing they only cost: TLS handshakes of
// connections that close after one request (they never reach a loop) ran
// on twice as many processors as cores, and each took 1.3x the CPU
// (2,846 against 2,282 handshakes per CPU-second with and without). So the
// processors are lent only while the loops hold connections, and given
// back once they have held none for a while. GOMAXPROCS stops the world,
// which the hysteresis keeps to the transitions of a workload, not of each
// connection.
const (
	// procsEvery is how often the lender looks at the loops.
	procsEvery = 100 * time.Millisecond
	// procsIdleTicks is how many looks in a row must find the loops empty
	// before the processors go back: one second.
	procsIdleTicks = 10
)

// procPolicy decides, one look at a time, when the loops' processors are
// lent and when they go back. It holds no clock, so a test drives it.
type procPolicy struct {
	// extra is how many processors the loops get while they are busy.
	extra int
	// idleTicks is how many idle looks in a row give them back.
	idleTicks int
	held      bool
	idle      int
}

// look takes whether the loops hold connections now and returns the
// change to make to GOMAXPROCS: +extra, -extra or 0.
func (p *procPolicy) look(busy bool) int {
	switch {
	case busy:
		p.idle = 0
		if !p.held {
			p.held = true
			return p.extra
		}
	case p.held:
		p.idle++
		if p.idle >= p.idleTicks {
			p.held, p.idle = false, 0
			return -p.extra
		}
	}
	return 0
}

// release returns what to take off GOMAXPROCS when the lender stops.
func (p *procPolicy) release() int {
	if !p.held {
		return 0
	}
	p.held, p.idle = false, 0
	return -p.extra
}

// procLender applies a procPolicy to the loops of one instance until
// stopped. GOMAXPROCS is process-wide, so it only ever adds and takes back
// its own share: instances in one process (tests, an upgrade's overlap)
// do not undo each other.
type procLender struct {
	policy procPolicy
	// busy reports whether the loops hold connections.
	busy func() bool
	stop chan struct{}
	done chan struct{}
}

// lendProcs starts lending extra processors to loops while busy says they
// hold connections.
func lendProcs(extra int, busy func() bool) *procLender {
	l := &procLender{
		policy: procPolicy{extra: extra, idleTicks: procsIdleTicks},
		busy:   busy, stop: make(chan struct{}), done: make(chan struct{}),
	}
	go l.run()
	return l
}

func (l *procLender) run() {
	defer close(l.done)
	t := time.NewTicker(procsEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			addProcs(l.policy.release())
			return
		case <-t.C:
			addProcs(l.policy.look(l.busy()))
		}
	}
}

// Close stops the lender and gives back what it holds; nil is a no-op.
func (l *procLender) Close() {
	if l == nil {
		return
	}
	close(l.stop)
	<-l.done
}

func addProcs(n int) {
	if n != 0 {
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + n)
	}
}
