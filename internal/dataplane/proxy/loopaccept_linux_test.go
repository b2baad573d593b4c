//go:build linux

package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/testutil/lockedbuf"
)

// acceptFixture is loops with no routes (every request is handed to the
// goroutine engine, which answers 404 or 421) and a listening socket they
// may accept from.
type acceptFixture struct {
	e    *Loops
	log  *lockedbuf.Buffer
	fd   int
	addr string
}

func newAcceptFixture(t *testing.T, loops int) *acceptFixture {
	t.Helper()
	f := &acceptFixture{log: &lockedbuf.Buffer{}}
	p := New(Options{
		Router:  route.NewRouter(route.NewTable()),
		Trusted: forward.NewTrusted(nil),
		Logger:  slog.New(slog.NewTextHandler(f.log, nil)),
	})
	var err error
	f.e, err = p.NewLoops(LoopOptions{Loops: loops, Handoff: func(nc net.Conn, h *Handoff) {
		go p.ServeHandoff(nc, h, ConnInfo{})
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.e.Shutdown(ctx)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var derr error
	rc.Control(func(s uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		f.fd = int(r)
		if errno != 0 {
			derr = errno
		}
	})
	if derr != nil {
		t.Fatal(derr)
	}
	// The duplicate keeps the socket listening, out of Go's netpoller.
	ln.Close()
	t.Cleanup(func() { syscall.Close(f.fd) })
	return f
}

// get sends one request on a new connection and returns the status line.
func (f *acceptFixture) get(t *testing.T) string {
	t.Helper()
	resp, _ := RawResponse(t, f.addr, "GET / HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n")
	return resp.Status
}

// acceptors counts, on each loop's goroutine, the listening sockets it
// accepts from, and checks that fd is in its epoll set exactly when it
// says so.
func (f *acceptFixture) acceptors(t *testing.T) int {
	t.Helper()
	n := 0
	for _, l := range f.e.loops {
		l.onLoop(func() {
			n += len(l.acceptors)
			on := false
			for _, la := range l.acceptors {
				on = on || la.on
			}
			// EPOLL_CTL_MOD finds fd registered or not (ENOENT); it is not
			// allowed on an EPOLLEXCLUSIVE registration (EINVAL).
			ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(f.fd)}
			err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_MOD, f.fd, &ev)
			if in := !errors.Is(err, syscall.ENOENT); in != on {
				t.Errorf("loop: listening socket in the epoll set: %v (epoll_ctl: %v), want %v", in, err, on)
			}
		})
	}
	return n
}

// TestLoopsAcceptPauseOnShortageThenResume: accept4 failing for want of
// descriptors takes the listening socket out of the loop's epoll set for a
// pause (level-triggered, it would otherwise be reported, and accept4
// fail, in a spin), logs it, and accepting resumes after the pause.
func TestLoopsAcceptPauseOnShortageThenResume(t *testing.T) {
	f := newAcceptFixture(t, 1)
	var calls, shortages atomic.Int64
	a, err := f.e.Accept(AcceptOptions{
		FD: f.fd,
		accept4: func(fd, flags int) (int, syscall.Sockaddr, error) {
			calls.Add(1)
			if shortages.Load() < 3 {
				shortages.Add(1)
				return -1, nil, syscall.EMFILE
			}
			return syscall.Accept4(fd, flags)
		},
		Failed: func(err error) { t.Errorf("accepting failed: %v", err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	start := time.Now()
	if st := f.get(t); !strings.HasPrefix(st, "4") {
		t.Fatalf("status %q, want the goroutine engine's 4xx for an unknown host", st)
	}
	took := time.Since(start)
	// Three shortages, one accept; a spin would have called it thousands
	// of times.
	if n := calls.Load(); n > 6 {
		t.Errorf("accept4 called %d times for 3 shortages and one connection: the loop retried without a pause", n)
	}
	// Pauses of 5, 10 and 20 ms, each ending at a sweep at the earliest.
	if took < 35*time.Millisecond {
		t.Errorf("the connection was accepted %s after it was made, through 3 shortages: no pause", took)
	}
	if log := f.log.String(); strings.Count(log, "accept failed; retrying") != 3 || !strings.Contains(log, "too many open files") {
		t.Errorf("log, want 3 warnings naming the shortage:\n%s", log)
	}
	if n := f.acceptors(t); n != 1 {
		t.Errorf("%d acceptors after resuming, want 1", n)
	}
	t.Logf("accepted %s after the connection through 3 shortages; accept4 called %d times", took, calls.Load())
}

// TestLoopsAcceptStopsOnFailureAndOnStop: an accept4 error retrying cannot
// mend stops every loop accepting and is reported once; Stop takes the
// socket out of every loop's epoll set before it returns.
func TestLoopsAcceptStopsOnFailureAndOnStop(t *testing.T) {
	f := newAcceptFixture(t, 2)
	failed := make(chan error, 2)
	var calls atomic.Int64
	a, err := f.e.Accept(AcceptOptions{
		FD: f.fd,
		accept4: func(fd, flags int) (int, syscall.Sockaddr, error) {
			calls.Add(1)
			return -1, nil, syscall.EINVAL
		},
		Failed: func(err error) { failed <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := f.acceptors(t); n != 2 {
		t.Fatalf("%d loops accept, want 2", n)
	}
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "accept4") || !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Failed got %v, want accept4's EINVAL", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("accept4 failed but Failed was not called")
	}
	if n := f.acceptors(t); n != 0 {
		t.Errorf("%d loops still accept after the failure, want 0", n)
	}
	// The loops' barrier above ran after any event already in hand.
	n := calls.Load()
	if n > 2 {
		t.Errorf("accept4 called %d times after failing: each loop should try at most once", n)
	}
	if len(failed) != 0 {
		t.Errorf("Failed called more than once")
	}
	a.Stop()

	// A second Accepting, stopped: no loop has the socket any more.
	a2, err := f.e.Accept(AcceptOptions{FD: f.fd})
	if err != nil {
		t.Fatal(err)
	}
	if n := f.acceptors(t); n != 2 {
		t.Fatalf("%d loops accept, want 2", n)
	}
	if st := f.get(t); !strings.HasPrefix(st, "4") {
		t.Fatalf("status %q, want the goroutine engine's 4xx for an unknown host", st)
	}
	a2.Stop()
	if n := f.acceptors(t); n != 0 {
		t.Errorf("%d loops still accept after Stop, want 0", n)
	}
}

// TestLoopsAcceptSpreadsABurst: connections opened all at once (a client's
// pool starting) end up spread over the loops, although epoll wakes
// whichever loop is waiting; without the spreading one loop took 51 to 64
// of 64 here, and served their keep-alive traffic alone.
func TestLoopsAcceptSpreadsABurst(t *testing.T) {
	f := newAcceptFixture(t, 2)
	a, err := f.e.Accept(AcceptOptions{FD: f.fd})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	const n = 64
	conns := make(chan net.Conn, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", f.addr)
			if err != nil {
				t.Error(err)
				return
			}
			conns <- c
		}()
	}
	wg.Wait()
	close(conns)
	defer func() {
		for c := range conns {
			c.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if all, _ := f.e.Clients(); all == n {
			break
		}
		if time.Now().After(deadline) {
			all, _ := f.e.Clients()
			t.Fatalf("the loops accepted %d of %d connections", all, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Counted from when a loop is given a connection (load), so also those
	// handed over and still in a loop's inbox.
	var per []int
	for _, l := range f.e.loops {
		per = append(per, int(l.load.Load()))
	}
	if len(per) != 2 || min(per[0], per[1]) < n*3/8 {
		t.Fatalf("connections per loop %v, want each loop to hold at least %d of %d", per, n*3/8, n)
	}
	t.Logf("connections per loop: %v", per)
}

// TestPeerAddr: the peer of an accepted socket, IPv4 and IPv6 (a link-local
// one with its zone), and IPv4 seen through a dual-stack socket, which the
// client's description unmaps.
func TestPeerAddr(t *testing.T) {
	trusted := forward.NewTrusted(nil)
	for _, c := range []struct {
		sa   syscall.Sockaddr
		want string
	}{
		{&syscall.SockaddrInet4{Addr: [4]byte{192, 0, 2, 7}}, "192.0.2.7"},
		{&syscall.SockaddrInet6{Addr: netip.MustParseAddr("2001:db8::1").As16()}, "2001:db8::1"},
		{&syscall.SockaddrInet6{Addr: netip.MustParseAddr("fe80::1").As16(), ZoneId: 3}, "fe80::1%3"},
		{&syscall.SockaddrInet6{Addr: netip.MustParseAddr("::ffff:192.0.2.7").As16()}, "192.0.2.7"},
		{&syscall.SockaddrUnix{Name: "/x"}, "unix"},
	} {
		if got := forward.ClientAt(peerAddr(c.sa), false, trusted).IP; got != c.want {
			t.Errorf("peer %+v: client IP %q, want %q", c.sa, got, c.want)
		}
	}
}

// TestLoopsAfterShutdown gives stopped loops a connection and wakes them:
// the connection is closed (its client sees the end, not a wait) and
// uncounted, the wake-up writes nothing to the descriptor number the
// loop's eventfd had, which a new file has taken, and a listening socket
// is refused, not taken and left unread.
func TestLoopsAfterShutdown(t *testing.T) {
	f := newAcceptFixture(t, 1)
	l := f.e.loops[0]
	l.mu.Lock()
	wake := l.wake
	l.mu.Unlock()
	if err := f.e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The lowest free number is taken by the next file; the loop's
	// eventfd and epoll descriptors were closed last, so one of the next
	// few eventfds gets the old number.
	reused := -1
	var opened []int
	defer func() {
		for _, fd := range opened {
			syscall.Close(fd)
		}
	}()
	for range 8 {
		r, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if errno != 0 {
			t.Fatal(errno)
		}
		opened = append(opened, int(r))
		if int(r) == wake {
			reused = wake
			break
		}
	}
	if reused < 0 {
		t.Fatalf("no new eventfd took the loop's old number %d (got %v)", wake, opened)
	}
	l.wakeup()
	var b [8]byte
	if n, err := syscall.Read(reused, b[:]); err != syscall.EAGAIN {
		t.Fatalf("a stopped loop's wake-up wrote to descriptor %d, now another file's: read %d bytes, err %v", reused, n, err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if a, err := f.e.Accept(AcceptOptions{FD: f.fd}); err == nil || !strings.Contains(err.Error(), "shut down") {
		if a != nil {
			a.Stop()
		}
		t.Fatalf("Accept after Shutdown: %v; want an error saying the loops have shut down", err)
	}
	if err := f.e.Add(server); err != nil {
		t.Fatalf("Add after Shutdown: %v (want the connection taken and closed)", err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(b[:]); !errors.Is(err, io.EOF) {
		t.Fatalf("a connection given to stopped loops: read %d bytes, err %v; want the end of the stream at once", n, err)
	}
	if all, _ := f.e.Clients(); all != 0 || l.load.Load() != 0 {
		t.Fatalf("after the connection was closed the loops count %d clients, the loop's load is %d; want 0", all, l.load.Load())
	}
}
