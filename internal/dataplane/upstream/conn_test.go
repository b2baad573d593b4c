package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// backend is a real TCP server on 127.0.0.1 that reads each connection
// until the proxy side closes it, and reports accepts and closes.
type backend struct {
	ln       net.Listener
	addr     string
	accepted chan struct{}
	closed   chan struct{}

	mu      sync.Mutex
	conns   []net.Conn
	stopped bool
	wg      sync.WaitGroup
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{
		ln: ln, addr: ln.Addr().String(),
		// Room for every connection a test makes: a full channel would
		// block the accept loop or a reader and hang the cleanup.
		accepted: make(chan struct{}, 1<<16), closed: make(chan struct{}, 1<<16),
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			if b.stopped {
				// Accepted while the cleanup ran: it would never be closed.
				b.mu.Unlock()
				c.Close()
				return
			}
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			b.accepted <- struct{}{}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				io.Copy(io.Discard, c)
				c.Close()
				b.closed <- struct{}{}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		b.stopped = true
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// waitClosed waits until n more connections were closed by the client side.
func (b *backend) waitClosed(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-b.closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d connections were closed", i, n)
		}
	}
}

// assertNoneClosed checks that no connection was closed so far.
func (b *backend) assertNoneClosed(t *testing.T) {
	t.Helper()
	select {
	case <-b.closed:
		t.Fatal("a connection was closed")
	default:
	}
}

// waitAccepted waits until n more connections were accepted.
func (b *backend) waitAccepted(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-b.accepted:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d connections were accepted", i, n)
		}
	}
}

func newConnTarget(t *testing.T, addr string, mod func(*ConnOptions)) *Target {
	t.Helper()
	o := DefaultConnOptions()
	o.ConnectTimeout = 5 * time.Second
	if mod != nil {
		mod(o)
	}
	return NewTarget(TargetOptions{Addr: addr, Initial: Up, Conn: o})
}

func assertConns(t *testing.T, tg *Target, open, idle int) {
	t.Helper()
	if o, i := tg.Conns(); o != open || i != idle {
		t.Fatalf("conns = %d open, %d idle; want %d, %d", o, i, open, idle)
	}
}

func TestGetDialsAndPutReuses(t *testing.T) {
	b := newBackend(t)
	tg := newConnTarget(t, b.addr, nil)
	ctx := context.Background()

	c, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.waitAccepted(t, 1)
	if c.Reused || c.Target() != tg || c.R == nil || c.W == nil {
		t.Fatalf("new conn: reused %v, target %p (want %p), reader/writer set %v",
			c.Reused, c.Target(), tg, c.R != nil && c.W != nil)
	}
	assertConns(t, tg, 1, 0)

	tg.Put(c)
	assertConns(t, tg, 1, 1)
	c2, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c2 != c || !c2.Reused {
		t.Fatalf("Get after Put = %p reused %v, want %p reused", c2, c2.Reused, c)
	}
	assertConns(t, tg, 1, 0)
	// The reused connection still works.
	if _, err := c2.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b.assertNoneClosed(t)

	// The most recently used idle connection is handed out first, so the
	// older ones age out.
	c3, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tg.Put(c2)
	tg.Put(c3)
	if got, _ := tg.Get(ctx); got != c3 {
		t.Fatal("Get did not hand out the most recently returned connection")
	}

	tg.Discard(c3)
	b.waitClosed(t, 1)
	assertConns(t, tg, 1, 1)
}

// An idle cap below the concurrency the target sees would close
// connections on their way back only to dial new ones: the idle list keeps
// as many as were in use at once, and gives back the surplus once the peak
// is over.
func TestIdleFollowsPeakInUse(t *testing.T) {
	b := newBackend(t)
	tg := newConnTarget(t, b.addr, func(o *ConnOptions) { o.MaxIdle = 2 })
	ctx := context.Background()
	for round := range 3 {
		var cs []*Conn
		for range 5 {
			c, err := tg.Get(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		for _, c := range cs {
			tg.Put(c)
		}
		if round == 0 {
			b.waitAccepted(t, 5)
		}
		assertConns(t, tg, 5, 5)
	}
	b.assertNoneClosed(t)
	select {
	case <-b.accepted:
		t.Fatal("a round of 5 concurrent requests dialled although 5 connections were idle")
	default:
	}

	// One window later the peak is still remembered; two windows later it
	// is not, and a sweep closes the oldest idle connections down to
	// MaxIdle.
	tg.mu.Lock()
	tg.conns.peakStart = tg.conns.peakStart.Add(-peakWindow)
	tg.mu.Unlock()
	tg.SweepIdle()
	assertConns(t, tg, 5, 5)
	tg.mu.Lock()
	tg.conns.peakStart = tg.conns.peakStart.Add(-peakWindow)
	newest := tg.conns.idle[len(tg.conns.idle)-2:]
	keep := map[*Conn]bool{newest[0]: true, newest[1]: true}
	tg.mu.Unlock()
	tg.SweepIdle()
	b.waitClosed(t, 3)
	assertConns(t, tg, 2, 2)
	tg.mu.Lock()
	for _, c := range tg.conns.idle {
		if !keep[c] {
			t.Error("the sweep kept an older idle connection instead of the most recently used")
		}
	}
	tg.mu.Unlock()
}

func TestSweepClosesExpiredIdle(t *testing.T) {
	b := newBackend(t)
	const keepalive = time.Minute
	tg := newConnTarget(t, b.addr, func(o *ConnOptions) { o.KeepaliveTimeout = keepalive })
	ctx := context.Background()
	old, _ := tg.Get(ctx)
	fresh, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tg.Put(old)
	tg.Put(fresh)
	tg.mu.Lock()
	tg.conns.idle[0].idleSince = tg.conns.idle[0].idleSince.Add(-keepalive - time.Second)
	tg.mu.Unlock()
	tg.SweepIdle()
	b.waitClosed(t, 1)
	assertConns(t, tg, 1, 1)
	if c, err := tg.Get(ctx); err != nil || c != fresh {
		t.Fatalf("Get = %p, %v; want the connection idle for less than the timeout %p", c, err, fresh)
	}
}

func TestMaxIdleZeroKeepsNone(t *testing.T) {
	b := newBackend(t)
	tg := newConnTarget(t, b.addr, func(o *ConnOptions) { o.MaxIdle = 0 })
	c, err := tg.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tg.Put(c)
	b.waitClosed(t, 1)
	assertConns(t, tg, 0, 0)
}

func TestGetClosesExpiredIdle(t *testing.T) {
	b := newBackend(t)
	const keepalive = time.Minute
	tg := newConnTarget(t, b.addr, func(o *ConnOptions) { o.KeepaliveTimeout = keepalive })
	ctx := context.Background()
	old, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tg.Put(old)
	tg.Put(fresh)
	// Age both idle connections past the keep-alive timeout: the clock is
	// not waited on, the connections' idle times are moved back.
	tg.mu.Lock()
	for _, c := range tg.conns.idle {
		c.idleSince = c.idleSince.Add(-keepalive - time.Second)
	}
	tg.mu.Unlock()

	c, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c == old || c == fresh || c.Reused {
		t.Fatal("Get handed out a connection idle longer than the keep-alive timeout")
	}
	b.waitClosed(t, 2)
	assertConns(t, tg, 1, 0)

	// A connection idle for less than the timeout is reused.
	tg.Put(c)
	tg.mu.Lock()
	tg.conns.idle[0].idleSince = tg.conns.idle[0].idleSince.Add(-keepalive + time.Second)
	tg.mu.Unlock()
	if c2, err := tg.Get(ctx); err != nil || c2 != c {
		t.Fatalf("Get = %p, %v; want the idle connection %p", c2, err, c)
	}
}

func TestCloseIdle(t *testing.T) {
	b := newBackend(t)
	tg := newConnTarget(t, b.addr, nil)
	ctx := context.Background()
	busy, _ := tg.Get(ctx)
	i1, _ := tg.Get(ctx)
	i2, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tg.Put(i1)
	tg.Put(i2)
	if n := tg.CloseIdle(); n != 2 {
		t.Fatalf("CloseIdle = %d, want 2", n)
	}
	b.waitClosed(t, 2)
	assertConns(t, tg, 1, 0)
	if _, err := busy.Write([]byte("x")); err != nil {
		t.Fatalf("the connection in use was closed: %v", err)
	}
	// The target serves again: new connections are dialed.
	c, err := tg.Get(ctx)
	if err != nil || c.Reused {
		t.Fatalf("Get after CloseIdle = %v, %v; want a new connection", c, err)
	}
}

func TestCloseAllEndsRequestsInUse(t *testing.T) {
	b := newBackend(t)
	tg := newConnTarget(t, b.addr, nil)
	ctx := context.Background()
	busy, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tg.Put(idle)
	b.waitAccepted(t, 2)

	readErr := make(chan error, 1)
	go func() {
		var buf [1]byte
		_, err := busy.Read(buf[:]) // the backend never writes: blocks
		readErr <- err
	}()
	if n := tg.CloseAll(); n != 2 {
		t.Fatalf("CloseAll = %d, want 2", n)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked Read returned %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Read blocked on a connection did not return after CloseAll")
	}
	b.waitClosed(t, 2)
	assertConns(t, tg, 0, 0)

	// The request ends and returns its connection: it is not kept.
	tg.Put(busy)
	assertConns(t, tg, 0, 0)
	// CloseAll is not a retirement: new connections are dialed.
	c, err := tg.Get(ctx)
	if err != nil || c == busy || c.Reused {
		t.Fatalf("Get after CloseAll = %p, %v; want a new connection", c, err)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
}

func TestRetire(t *testing.T) {
	b := newBackend(t)
	tg := newConnTarget(t, b.addr, nil)
	ctx := context.Background()
	busy, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := tg.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tg.Put(idle)
	tg.Retire()
	b.waitClosed(t, 2)
	assertConns(t, tg, 0, 0)

	c, err := tg.Get(ctx)
	var de *DialError
	if c != nil || !errors.As(err, &de) || !errors.Is(err, ErrTargetClosed) {
		t.Fatalf("Get on a retired target = %v, %v; want a *DialError wrapping ErrTargetClosed", c, err)
	}
	tg.Put(busy)
	assertConns(t, tg, 0, 0)
}

func TestDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	tg := newConnTarget(t, addr, nil)
	c, err := tg.Get(context.Background())
	var de *DialError
	if c != nil || !errors.As(err, &de) {
		t.Fatalf("Get to a closed port = %v, %v; want a *DialError", c, err)
	}
	if !strings.HasPrefix(err.Error(), "connect: ") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("error %q does not say connect and name %s", err, addr)
	}
	assertConns(t, tg, 0, 0)

	// A cancelled context is a dial error too: nothing was sent.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := newBackend(t)
	tg = newConnTarget(t, b.addr, nil)
	if _, err := tg.Get(ctx); !errors.As(err, &de) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a cancelled context = %v, want a *DialError wrapping context.Canceled", err)
	}
}

// Requests take and return connections concurrently while the pool's
// connections are closed under them; every connection is accounted for.
func TestConnsConcurrent(t *testing.T) {
	b := newBackend(t)
	tg := newConnTarget(t, b.addr, func(o *ConnOptions) { o.MaxIdle = 4 })
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				c, err := tg.Get(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					tg.Discard(c)
				} else {
					tg.Put(c)
				}
			}
		}()
	}
	for range 20 {
		tg.CloseIdle()
	}
	wg.Wait()
	open, idle := tg.Conns()
	if open != idle || idle > 8 {
		t.Fatalf("after the requests: %d open, %d idle; want all open ones idle, at most the 8 in use at once", open, idle)
	}
	tg.CloseAll()
	assertConns(t, tg, 0, 0)
}
