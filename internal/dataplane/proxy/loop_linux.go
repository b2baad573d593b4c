//go:build linux

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/dataplane/wire"
	"github.com/cutover/cutover/internal/human"
)

// Loops is the HTTP/1.1 engine of plain-HTTP listeners on Linux: one event
// loop per processor, each waiting in its own epoll set for its client and
// upstream connections and driving every request on them as a state
// machine, the way nginx's workers do.
//
// Why not a goroutine per connection (ServeConn): that model reads each
// socket once more per wait than needed (the read that finds it empty before
// the goroutine parks), and hands every wake-up through the scheduler, which
// parks and wakes threads and leaves processors idle between them. On the
// benchmark (bench/run, docs/benchmarks.md) the goroutine engine stayed at
// 0.90-0.95x nginx's requests per second; the loops pass nginx. A loop
// reads a socket only after epoll said it is readable and treats a short read
// as "drained" (as nginx does), so a request costs two reads and two writes.
//
// The loops serve the common request themselves: a head without a body, no
// upgrade, to a service with an active pool of IP targets. Anything else (a
// request body, a WebSocket upgrade, a parse error, no route, a target named
// by host name) is handed with what was read so far to the goroutine
// engine, through LoopOptions.Handoff, which serves the connection from then
// on. Both engines share routing, balancing, pool accounting, retries,
// forwarding headers, response framing and the access log.
type Loops struct {
	p       *Proxy
	handoff func(net.Conn, *Handoff)
	loops   []*evloop
	next    atomic.Uint32
	closing atomic.Bool
	// idleGrace is how long a connection may stay idle once closing (see
	// Drain), in nanoseconds.
	idleGrace atomic.Int64
	// clients counts client connections owned by the loops; zero is
	// signalled on idle while shutting down.
	clients atomic.Int64
	// tlsClients counts those of them that are TLS connections.
	tlsClients atomic.Int64
	idle       chan struct{}
	wg         sync.WaitGroup

	shutOnce sync.Once
	shutErr  error
}

// LoopOptions configure Loops.
type LoopOptions struct {
	// Loops is the number of event loops; 0 means one per processor
	// (GOMAXPROCS).
	Loops int
	// Handoff takes a connection the loops give up, for the goroutine
	// engine (ServeHandoff). It must not block.
	Handoff func(nc net.Conn, h *Handoff)
}

// yieldEvery is how often a busy loop passes through the scheduler. The
// runtime preempts a goroutine that has not been scheduled for 10 ms: a
// signal, and its P taken from it; and sysmon, seeing that, stays at its
// shortest sleep. A loop never blocks in Go, so a busy one took that about
// every 10 ms (locked to its thread, as it was, each preemption also parked
// the thread and woke another). A Gosched is a run-queue round trip; on a
// new connection per request it raised requests per CPU-second by 8%,
// on keep-alive by 7% (docs/benchmarks.md).
const yieldEvery = 5 * time.Millisecond

// sweepEvery is how often a loop checks its connections' deadlines and
// idle upstream connections; timeouts fire up to this late.
const sweepEvery = 100 * time.Millisecond

// NewLoops starts the event loops.
func (p *Proxy) NewLoops(o LoopOptions) (*Loops, error) {
	if o.Handoff == nil {
		return nil, errors.New("event loops need a Handoff")
	}
	n := o.Loops
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	e := &Loops{p: p, handoff: o.Handoff, idle: make(chan struct{}, 1)}
	for range n {
		l, err := newEvloop(e)
		if err != nil {
			for _, l := range e.loops {
				l.stop()
			}
			e.wg.Wait()
			return nil, err
		}
		e.loops = append(e.loops, l)
		e.wg.Add(1)
		go l.run()
	}
	return e, nil
}

// Len is the number of event loops.
func (e *Loops) Len() int { return len(e.loops) }

// Clients is the number of client connections the loops serve now (not
// those handed to the goroutine engine), and how many of them are TLS
// connections.
func (e *Loops) Clients() (all, tls int64) { return e.clients.Load(), e.tlsClients.Load() }

// Add gives an accepted TCP connection to a loop. The loops take a
// duplicate of its socket and close nc; on error nc is left to the caller.
func (e *Loops) Add(nc net.Conn) error {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("event loops serve TCP connections, not %T", nc)
	}
	return e.add(tc, newConn{client: forward.NewClient(nc.RemoteAddr(), false, e.p.o.Trusted)})
}

// AddTLS gives a loop an HTTP/1.1 connection whose TLS handshake is done,
// served by tc over pipe (NewTLSPipe over the accepted TCP connection, or
// a sock.Wrap of one). The loops take a duplicate of the socket, close
// the pipe's net.Conn and drive tc from then on; on error the connection
// is left to the caller as it was.
func (e *Loops) AddTLS(tc *tls.Conn, pipe *TLSPipe) error {
	sc, ok := pipe.nc.(socketConn)
	if !ok {
		return fmt.Errorf("event loops serve TCP connections, not %T", pipe.nc)
	}
	return e.add(sc, newConn{client: forward.NewClient(pipe.raddr, true, e.p.o.Trusted), tc: tc, pipe: pipe})
}

// socketConn is a connection whose socket the loops can take: a
// *net.TCPConn or a sock.Conn.
type socketConn interface {
	syscall.Conn
	io.Closer
}

// add gives nc, a TCP connection, to a loop: its socket is duplicated and
// the connection closed, which takes it out of Go's netpoller and leaves
// the socket open for the loop.
func (e *Loops) add(nc socketConn, c newConn) error {
	rc, err := nc.SyscallConn()
	if err != nil {
		return fmt.Errorf("event loops: %w", err)
	}
	fd := -1
	var derr error
	cerr := rc.Control(func(s uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			derr = errno
			return
		}
		fd = int(r)
	})
	if cerr != nil || derr != nil {
		return fmt.Errorf("event loops: duplicating the socket: %w", errors.Join(cerr, derr))
	}
	c.fd = fd
	// The duplicate shares the open file, non-blocking like Go's sockets.
	nc.Close()
	if c.pipe != nil {
		c.pipe.nc = nil
	}
	e.enqueue(c)
	return nil
}

// enqueue gives c to the next loop.
func (e *Loops) enqueue(c newConn) {
	e.loops[e.next.Add(1)%uint32(len(e.loops))].enqueue(c)
}

// enqueue gives c to l, from any goroutine. A connection given to a loop
// that has stopped is closed, as closeAll would have closed it a moment
// earlier: a TLS connection whose first response ends as the loops shut
// down is handed over then, and left in the inbox of a loop that no longer
// reads it, its client would wait for an answer that never comes.
func (l *evloop) enqueue(c newConn) {
	l.take(c)
	l.mu.Lock()
	if l.wake < 0 {
		l.mu.Unlock()
		syscall.Close(c.fd)
		l.clientGone(c.tc != nil)
		return
	}
	l.inbox = append(l.inbox, c)
	l.wakeLocked()
	l.mu.Unlock()
}

// take counts c as l's, from when it is given to l until clientGone.
func (l *evloop) take(c newConn) {
	l.load.Add(1)
	l.e.clients.Add(1)
	if c.tc != nil {
		l.e.tlsClients.Add(1)
	}
}

// clientGone counts a client connection of l's as gone.
func (l *evloop) clientGone(tls bool) {
	l.load.Add(-1)
	l.e.clientGone(tls)
}

// Held is the request state the loops' client connections hold now: read
// buffers, and lworks (a request's head, exchange and response writer).
// An idle connection holds neither; tests and diagnostics use it to see
// that memory follows the requests under way, not the connections open.
func (e *Loops) Held() (readBufs, works int) {
	for _, l := range e.loops {
		// A stopped loop runs nothing; its connections are closed.
		l.onLoop(func() {
			readBufs += l.readBufs.Lent()
			works += l.lentWork
		})
	}
	return readBufs, works
}

// Shutdown closes idle client connections at once and the others after
// their response, until ctx ends; then it closes what is left and stops the
// loops. Later calls return the first one's result.
func (e *Loops) Shutdown(ctx context.Context) error { return e.Drain(ctx, 0) }

// Drain is Shutdown for a hand-over to another process that keeps the
// listening socket open: a client connection is closed once it has been
// idle for idleGrace, and a request arriving on it before that is served
// with Connection: close, so a busy keep-alive client is told to reconnect
// instead of having its next request cut (see listen.Server.Drain).
func (e *Loops) Drain(ctx context.Context, idleGrace time.Duration) error {
	e.shutOnce.Do(func() {
		e.idleGrace.Store(int64(idleGrace))
		e.shutErr = e.shutdown(ctx)
	})
	return e.shutErr
}

func (e *Loops) shutdown(ctx context.Context) error {
	e.closing.Store(true)
	for _, l := range e.loops {
		l.wakeup()
	}
	var err error
	for e.clients.Load() > 0 {
		select {
		case <-e.idle:
			continue
		case <-time.After(sweepEvery):
			continue
		case <-ctx.Done():
		}
		if n := e.clients.Load(); n > 0 {
			err = fmt.Errorf("shutdown: closed %s with requests in flight: %w", human.Count(int(n), "connection"), ctx.Err())
		}
		break
	}
	for _, l := range e.loops {
		l.stop()
	}
	e.wg.Wait()
	return err
}

// begin, end and draining are the loops' Tracker: no per-connection state
// is needed, as a loop owns its connections. A graceful Drain keeps
// serving: a response whose head went out before the drain began did not
// say Connection: close, so its client may send another request, which is
// answered (with Connection: close) rather than cut.
func (e *Loops) begin() bool    { return !e.closing.Load() || e.idleGrace.Load() > 0 }
func (e *Loops) end() bool      { return !e.closing.Load() || e.idleGrace.Load() > 0 }
func (e *Loops) draining() bool { return e.closing.Load() }

func (e *Loops) clientGone(tls bool) {
	if tls {
		e.tlsClients.Add(-1)
	}
	if e.clients.Add(-1) == 0 && e.closing.Load() {
		select {
		case e.idle <- struct{}{}:
		default:
		}
	}
}

// newConn is a connection Add or AddTLS gives a loop.
type newConn struct {
	fd     int
	client forward.Client
	// tc and pipe serve a TLS connection; nil for plain HTTP.
	tc   *tls.Conn
	pipe *TLSPipe
}

// handler is what a loop calls with an epoll event of a descriptor.
type handler interface{ onEvent(ev uint32) }

// evloop is one event loop: a goroutine waiting in epoll_wait and the
// connections registered in its epoll set. Everything but inbox and the
// stop flag is used by the loop's goroutine alone.
type evloop struct {
	e    *Loops
	p    *Proxy
	ep   int
	wake int // eventfd: new connections, shutdown, stop

	mu    sync.Mutex
	inbox []newConn
	// byes are goodbyes to event streams the loop relays (loopBye).
	byes    []*loopBye
	stopped atomic.Bool
	// load is the number of client connections given to the loop and not
	// gone yet (take, clientGone); other loops read it to balance.
	load atomic.Int32
	// done is closed when the loop's goroutine has ended.
	done chan struct{}

	fds     []handler // by descriptor
	clients map[*lclient]struct{}
	ups     map[*lup]struct{}
	idle    map[*upstream.Target][]*lup
	now     time.Time
	swept   time.Time
	yielded time.Time
	events  [128]syscall.EpollEvent
	// readBufs and spareWork are lent to client connections while they
	// have a request to hold (lclient.getWork, wire.Reader.Release).
	readBufs  wire.FreeList
	spareWork []*lwork
	lentWork  int
	// calls are functions to run on the loop's goroutine (onLoop, post).
	calls []func()
	// acceptors are the listening sockets the loop accepts from
	// (Loops.Accept).
	acceptors []*lacceptor
}

func newEvloop(e *Loops) (*evloop, error) {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("event loop: epoll_create1: %w", err)
	}
	wfd, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		syscall.Close(ep)
		return nil, fmt.Errorf("event loop: eventfd2: %w", errno)
	}
	l := &evloop{
		e: e, p: e.p, ep: ep, wake: int(wfd), done: make(chan struct{}),
		clients: make(map[*lclient]struct{}),
		ups:     make(map[*lup]struct{}),
		idle:    make(map[*upstream.Target][]*lup),
	}
	l.readBufs = wire.FreeList{Size: clientReadBuf, Max: maxSpareWork}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.wake)}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, l.wake, &ev); err != nil {
		syscall.Close(ep)
		syscall.Close(l.wake)
		return nil, fmt.Errorf("event loop: epoll_ctl: %w", err)
	}
	return l, nil
}

// wakeup makes the loop's epoll_wait return to look at its inbox and
// calls; after the loop has stopped it does nothing (the eventfd is closed,
// and its number may belong to another file by then).
func (l *evloop) wakeup() {
	l.mu.Lock()
	l.wakeLocked()
	l.mu.Unlock()
}

// wakeLocked is wakeup with l.mu held, for a caller that has just put
// something in the inbox or a list under it.
func (l *evloop) wakeLocked() {
	if l.wake >= 0 {
		one := uint64(1)
		syscall.RawSyscall(syscall.SYS_WRITE, uintptr(l.wake), uintptr(unsafe.Pointer(&one)), 8)
	}
}

func (l *evloop) stop() {
	l.stopped.Store(true)
	l.wakeup()
}

// epollET is syscall.EPOLLET as the uint32 the event mask is (the syscall
// package's constant is negative).
const epollET = 1 << 31

// watch registers fd for edge-triggered reads and writes.
func (l *evloop) watch(fd int, h handler) error {
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | epollET,
		Fd:     int32(fd),
	}
	if err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return err
	}
	l.setHandler(fd, h)
	return nil
}

// setHandler makes h the handler of fd's events.
func (l *evloop) setHandler(fd int, h handler) {
	for fd >= len(l.fds) {
		l.fds = append(l.fds, make([]handler, len(l.fds)+64)...)
	}
	l.fds[fd] = h
}

// forget takes fd out of the loop; the caller closes it.
func (l *evloop) forget(fd int) {
	syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, fd, nil)
	l.fds[fd] = nil
}

func (l *evloop) run() {
	defer l.e.wg.Done()
	defer close(l.done)
	l.now = time.Now()
	l.swept, l.yielded = l.now, l.now
	for {
		n, err := syscall.EpollWait(l.ep, l.events[:], int(sweepEvery/time.Millisecond))
		if err != nil && err != syscall.EINTR {
			l.p.o.Logger.Error("event loop: epoll_wait failed; the loop stops", "err", err)
			l.closeAll()
			return
		}
		l.now = time.Now()
		for i := range n {
			ev := &l.events[i]
			fd := int(ev.Fd)
			if fd == l.wake {
				l.drainWake()
				continue
			}
			if fd < len(l.fds) && l.fds[fd] != nil {
				l.fds[fd].onEvent(ev.Events)
			}
		}
		if l.stopped.Load() {
			l.closeAll()
			return
		}
		if l.now.Sub(l.yielded) >= yieldEvery {
			l.yielded = l.now
			runtime.Gosched()
		}
		if l.now.Sub(l.swept) >= sweepEvery {
			l.swept = l.now
			l.sweep()
		}
	}
}

func (l *evloop) drainWake() {
	var b [8]byte
	syscall.RawSyscall(syscall.SYS_READ, uintptr(l.wake), uintptr(unsafe.Pointer(&b[0])), 8)
	l.mu.Lock()
	in, byes, calls := l.inbox, l.byes, l.calls
	l.inbox, l.byes, l.calls = nil, nil, nil
	l.mu.Unlock()
	for _, f := range calls {
		f()
	}
	for _, nc := range in {
		l.addClient(nc)
	}
	for _, g := range byes {
		if g.c.seq == g.seq {
			g.c.goodbye()
		}
	}
	l.closeIdle()
}

// closeIdle closes, once shutting down, the idle connections that have
// been idle for the grace (at once without one); busy ones close after
// their response.
func (l *evloop) closeIdle() {
	if !l.e.closing.Load() {
		return
	}
	cut := l.now.Add(-time.Duration(l.e.idleGrace.Load()))
	for c := range l.clients {
		if c.st == cIdle && c.r.Buffered() == 0 && !c.idleAt.After(cut) {
			c.close()
		}
	}
}

// sweep fires deadlines and closes upstream connections that CloseIdle or
// CloseAll asked to be closed, or that sat idle too long.
func (l *evloop) sweep() {
	l.closeIdle()
	l.resumeAccepting()
	for c := range l.clients {
		if !c.deadline.IsZero() && l.now.After(c.deadline) {
			c.timeout()
		} else if c.moveOK {
			c.moveIfDown()
		} else if c.tc != nil && !c.trimmed && c.st == cIdle && l.now.Sub(c.idleAt) >= l.p.o.ParkAfter {
			// An idle TLS connection drops crypto/tls's input buffers, as
			// a parked one does (see tlsTrim); not at once, or a busy one
			// would allocate them again per request.
			l.p.tlsTrim.trim(c.tc)
			c.trimmed = true
		}
	}
	for u := range l.ups {
		igen, agen, retired := u.t.ExtConns(0, 0)
		switch {
		case u.owner != nil:
			if agen != u.allGen {
				u.owner.upstreamClosed()
			}
		case u.stale(igen, agen, retired, l.now):
			l.closeUp(u)
		}
	}
}

// closeAll closes every connection when the loop stops; requests still
// running end as if their upstream failed.
func (l *evloop) closeAll() {
	for c := range l.clients {
		c.abort()
	}
	for u := range l.ups {
		l.closeUp(u)
	}
	// The inbox is emptied and the loop marked stopped (wake -1) under one
	// lock: a connection enqueued after that is closed by enqueue, and
	// none can land in between, in an inbox no one reads again.
	l.mu.Lock()
	in := l.inbox
	l.inbox = nil
	syscall.Close(l.wake)
	l.wake = -1
	l.mu.Unlock()
	for _, nc := range in {
		syscall.Close(nc.fd)
		l.clientGone(nc.tc != nil)
	}
	syscall.Close(l.ep)
}

// fdSource reads a non-blocking socket for a wire.Reader, nginx-style: it
// reads only after epoll reported the socket readable, and a read that
// returns less than asked means the socket is drained until the next event,
// so no read is spent finding it empty. A hang-up seen in an event keeps it
// readable so the end of the stream is read.
type fdSource struct {
	fd     int
	ready  bool
	hangup bool
}

func (s *fdSource) event(ev uint32) {
	if ev&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		s.ready = true
	}
	if ev&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		s.hangup = true
	}
}

func (s *fdSource) Read(p []byte) (int, error) {
	if !s.ready {
		return 0, wire.ErrWouldBlock
	}
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(s.fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			if n == 0 {
				return 0, io.EOF
			}
			if int(n) < len(p) && !s.hangup {
				s.ready = false
			}
			return int(n), nil
		case syscall.EAGAIN:
			s.ready = false
			return 0, wire.ErrWouldBlock
		case syscall.EINTR:
			continue
		}
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: e}
	}
}

// writeFD writes as much of p as the socket takes: n bytes, and whether
// it stopped because the send buffer is full.
func writeFD(fd int, p []byte) (n int, blocked bool, err error) {
	for n < len(p) {
		m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
		switch e {
		case 0:
			n += int(m)
		case syscall.EAGAIN:
			return n, true, nil
		case syscall.EINTR:
		default:
			return n, false, &net.OpError{Op: "write", Net: "tcp", Err: e}
		}
	}
	return n, false, nil
}

// outBuf is the io.Writer under a loop connection's bufio.Writer: what
// the bufio.Writer flushes is written to the socket at once, and what the
// socket does not take waits in pending for the next writable event.
type outBuf struct {
	fd      int
	held    bool // the socket is not connected yet: hold everything
	pending []byte
	err     error
}

func (o *outBuf) Write(p []byte) (int, error) {
	if o.err != nil {
		return len(p), nil
	}
	if len(o.pending) > 0 || o.held {
		o.pending = append(o.pending, p...)
		return len(p), nil
	}
	n, _, err := writeFD(o.fd, p)
	if err != nil {
		o.err = err
		return len(p), nil
	}
	if n < len(p) {
		o.pending = append(o.pending, p[n:]...)
	}
	return len(p), nil
}

// flushPending writes what is pending; it reports whether all of it went.
func (o *outBuf) flushPending() bool {
	if o.err != nil || len(o.pending) == 0 {
		return o.err == nil
	}
	n, _, err := writeFD(o.fd, o.pending)
	if err != nil {
		o.err = err
		return false
	}
	rest := copy(o.pending, o.pending[n:])
	o.pending = o.pending[:rest]
	if rest == 0 && cap(o.pending) > 64<<10 {
		o.pending = nil // a large response's backlog is not kept
	}
	return rest == 0
}

// LoopsSupported reports whether this system has the event loops (Linux).
const LoopsSupported = true
