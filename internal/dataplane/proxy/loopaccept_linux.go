//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/sock"
)

// epollExclusive is EPOLLEXCLUSIVE (Linux 4.5), which the syscall package
// does not name: a new connection wakes one of the loops waiting on the
// listening socket, not all of them.
const epollExclusive = 1 << 28

// AcceptOptions say which listening socket the loops accept from.
type AcceptOptions struct {
	// FD is a non-blocking listening TCP socket. It stays the caller's,
	// who closes it only after Accepting.Stop has returned.
	FD int
	// Failed is called once, on a loop, when accept4 fails in a way that
	// retrying cannot mend (not a client that gave up, not a shortage of
	// descriptors or memory, which pause accepting and retry); the loops
	// have stopped accepting from FD by then.
	Failed func(error)

	// accept4 stands in for syscall.Accept4 in tests.
	accept4 func(fd, flags int) (int, syscall.Sockaddr, error)
}

// Accepting is the loops accepting connections from one listening socket.
//
// Each loop has the socket in its own epoll set (level-triggered, with
// EPOLLEXCLUSIVE) and accepts from it when epoll says a connection is
// waiting, as nginx's workers do: the connection is the loop's from its
// first byte. Handing accepted sockets over from an accepting goroutine
// (as Add does) cost, per connection, a netpoller wake-up of that goroutine,
// a write and a read of the loop's eventfd and often a thread wake-up: on a
// new connection per request that put cutover's CPU per request at 1.3x
// nginx's (docs/benchmarks.md).
type Accepting struct {
	e    *Loops
	o    AcceptOptions
	once sync.Once
}

// lacceptor is one loop's side of an Accepting; only its loop uses it.
type lacceptor struct {
	l     *evloop
	a     *Accepting
	on    bool // in the loop's epoll set
	retry time.Time
	delay time.Duration
}

// Accept makes every loop accept connections from o.FD until Stop.
func (e *Loops) Accept(o AcceptOptions) (*Accepting, error) {
	if o.accept4 == nil {
		o.accept4 = syscall.Accept4
	}
	a := &Accepting{e: e, o: o}
	var errs []error
	for _, l := range e.loops {
		ran := l.onLoop(func() {
			la := &lacceptor{l: l, a: a}
			if err := la.watch(); err != nil {
				errs = append(errs, err)
				return
			}
			l.acceptors = append(l.acceptors, la)
		})
		if !ran {
			// Else the socket would look served while no loop reads it.
			errs = append(errs, errors.New("the loops have shut down"))
			break
		}
	}
	if len(errs) > 0 {
		a.Stop()
		return nil, fmt.Errorf("event loops: watching the listening socket: %w", errors.Join(errs...))
	}
	return a, nil
}

// Stop takes the socket out of every loop's epoll set; once it returns no
// loop accepts from it, and the caller may close it.
func (a *Accepting) Stop() {
	for _, l := range a.e.loops {
		l.onLoop(func() { l.dropAcceptor(a) })
	}
}

func (l *evloop) dropAcceptor(a *Accepting) {
	kept := l.acceptors[:0]
	for _, la := range l.acceptors {
		if la.a != a {
			kept = append(kept, la)
		} else if la.on {
			la.unwatch()
		}
	}
	clear(l.acceptors[len(kept):])
	l.acceptors = kept
}

// onLoop runs f on l's goroutine and returns once it has run, or at once
// when the loop has stopped (then f does not run); ran says which.
func (l *evloop) onLoop(f func()) (ran bool) {
	done := make(chan struct{})
	l.post(func() { f(); close(done) })
	select {
	case <-done:
		return true
	case <-l.done:
		// f may have run just before the loop stopped.
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
}

// post has l's goroutine run f soon, without waiting for it.
func (l *evloop) post(f func()) {
	l.mu.Lock()
	l.calls = append(l.calls, f)
	l.wakeLocked()
	l.mu.Unlock()
}

func (la *lacceptor) watch() error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | epollExclusive, Fd: int32(la.a.o.FD)}
	if err := syscall.EpollCtl(la.l.ep, syscall.EPOLL_CTL_ADD, la.a.o.FD, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	la.l.setHandler(la.a.o.FD, la)
	la.on = true
	return nil
}

func (la *lacceptor) unwatch() {
	la.l.forget(la.a.o.FD)
	la.on = false
}

// onEvent accepts one connection, as nginx does by default (multi_accept
// off): the socket is level-triggered, so one still waiting is reported
// again by the next epoll_wait, after the events already in hand.
func (la *lacceptor) onEvent(uint32) {
	fd, sa, err := la.a.o.accept4(la.a.o.FD, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
	switch {
	case err == nil:
		la.delay = 0
		l := la.l
		c := newConn{fd: fd, client: forward.ClientAt(peerAddr(sa), false, l.p.o.Trusted)}
		if to := l.lighter(); to != nil {
			to.enqueue(c)
			return
		}
		l.take(c)
		l.addClient(c)
	case err == syscall.EAGAIN || err == syscall.EINTR || err == syscall.ECONNABORTED:
		// Another loop took it, a signal, or the client gave up before
		// it was accepted: net.Listener.Accept retries these too.
	case sock.Shortage(err):
		// The socket stays good and connections close meanwhile; it is
		// out of the epoll set until the pause ends (see resume), or
		// level-triggering would report it again at once.
		la.delay = sock.NextBackOff(la.delay)
		la.retry = la.l.now.Add(la.delay)
		la.unwatch()
		la.l.p.o.Logger.Warn("accept failed; retrying", "err", os.NewSyscallError("accept4", err), "delay", la.delay)
	default:
		// Out of this loop's set at once (level-triggered, the error
		// would come back with every epoll_wait), and out of the others'
		// when they next wake; Failed is told once.
		a := la.a
		la.l.dropAcceptor(a)
		for _, l := range a.e.loops {
			if l != la.l {
				l.post(func() { l.dropAcceptor(a) })
			}
		}
		a.once.Do(func() {
			if a.o.Failed != nil {
				a.o.Failed(os.NewSyscallError("accept4", err))
			}
		})
	}
}

// lighter is the loop a connection l accepted should go to instead of l,
// or nil to keep it. The loop that epoll wakes is whichever is waiting, so
// a burst of connections (a client pool opening) can all land on one loop
// while the other sleeps, and keep-alive connections stay where they
// land: one loop would then serve most of the traffic on one core. A
// connection goes to the least-loaded loop when l holds more than one
// plus a sixteenth of its own load more: short-lived connections, whose
// counts move by one or two either way, mostly stay where they were
// accepted, without a hand-over.
func (l *evloop) lighter() *evloop {
	own := l.load.Load()
	var best *evloop
	least := own - 1 - own/16
	for _, o := range l.e.loops {
		if n := o.load.Load(); o != l && n < least {
			best, least = o, n
		}
	}
	return best
}

// resumeAccepting puts back in the epoll set the listening sockets whose
// pause after a shortage has ended; the sweep calls it, so a pause lasts
// at least a sweep.
func (l *evloop) resumeAccepting() {
	for _, la := range l.acceptors {
		if !la.on && !l.now.Before(la.retry) {
			if err := la.watch(); err != nil {
				la.retry = l.now.Add(sock.NextBackOff(la.delay))
			}
		}
	}
}

// peerAddr is an accepted socket's peer address.
func peerAddr(sa syscall.Sockaddr) netip.Addr {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrFrom4(a.Addr)
	case *syscall.SockaddrInet6:
		addr := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 {
			addr = addr.WithZone(strconv.Itoa(int(a.ZoneId)))
		}
		return addr
	}
	return netip.Addr{}
}
