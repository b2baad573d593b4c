//go:build linux

package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/sock"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/dataplane/wire"
)

// cstate is where a loop's client connection is in its request cycle.
type cstate uint8

const (
	cIdle      cstate = iota // waiting for a request head
	cUpstream                // the request is being sent or its response head awaited
	cRelay                   // relaying the response body
	cFinishing               // the whole response is written but not yet sent
)

// lclient is a client connection served by a loop. What only a request
// needs (its lwork, the read buffer) is held only while one is under way
// or bytes of one are buffered, so an idle keep-alive connection costs a
// few hundred bytes, not kilobytes.
type lclient struct {
	l      *evloop
	fd     int
	src    fdSource
	r      *wire.Reader
	out    outBuf
	client forward.Client
	// tc serves a TLS connection over pipe, whose loop side is src and
	// out; nil for plain HTTP. wdst is what the response writer writes
	// to: tc, or out. trimmed says tc's idle buffers were dropped.
	tc      *tls.Conn
	pipe    *TLSPipe
	wdst    io.Writer
	trimmed bool
	// lwork is nil while the connection is idle.
	*lwork
	st     cstate
	closed bool

	// The request in progress.
	head     []byte
	attempts int
	lastErr  error
	up       *lup
	in       wire.Framing
	outF     wire.Framing
	keep     bool
	// deadline is when the state's timeout fires; headerTimer says the
	// header timeout (not the idle one) runs.
	deadline    time.Time
	headerTimer bool
	// idleAt is when the connection last became idle (for Loops.Drain).
	idleAt time.Time
	// seq numbers the connection's requests, so a goodbye meant for one
	// does not reach the next.
	seq uint64
	// sse: the response is an event stream a drain may end (goodbye); es
	// follows its events; bye: it was told goodbye, and ends at the next
	// event boundary or at byeBy.
	sse   bool
	bye   bool
	es    eventStream
	byeBy time.Time
	// respDeadline ends the wait for a response head; moveOK says the
	// request may move off a target that goes down or is ejected while it
	// waits (see Proxy.planWait).
	respDeadline time.Time
	moveOK       bool
}

// lwork is the state of a loop client's request in progress: its parsed
// head, its exchange and the writer of its response. A loop lends one per
// request from its free list (evloop.getWork) and takes it back when the
// connection goes idle.
type lwork struct {
	w   *bufio.Writer
	req wire.Request
	x   exchange
}

// maxSpareWork is how many lworks (and read buffers) a loop keeps for
// reuse; more busy connections than that allocate, and what they return
// beyond it is left to the garbage collector.
const maxSpareWork = 128

// getWork lends c the state of a request.
func (c *lclient) getWork() {
	if c.lwork != nil {
		return
	}
	l := c.l
	if n := len(l.spareWork); n > 0 {
		c.lwork = l.spareWork[n-1]
		l.spareWork[n-1] = nil
		l.spareWork = l.spareWork[:n-1]
		l.lentWork++
		c.w.Reset(c.wdst)
		return
	}
	c.lwork = &lwork{w: bufio.NewWriterSize(c.wdst, clientWriteBuf)}
	l.lentWork++
}

// putWork takes back the state of c's request; the request has ended.
func (c *lclient) putWork() {
	wk := c.lwork
	if wk == nil {
		return
	}
	c.lwork = nil
	l := c.l
	l.lentWork--
	if len(l.spareWork) < maxSpareWork {
		l.spareWork = append(l.spareWork, wk)
	}
}

func (l *evloop) addClient(nc newConn) {
	// A connection accepted as a graceful Drain began is served: its
	// client is sending a request.
	if l.e.closing.Load() && l.e.idleGrace.Load() == 0 {
		syscall.Close(nc.fd)
		l.clientGone(nc.tc != nil)
		return
	}
	c := &lclient{l: l, fd: nc.fd, client: nc.client, tc: nc.tc, pipe: nc.pipe}
	c.src.fd = nc.fd
	c.out.fd = nc.fd
	var src io.Reader = &c.src
	c.wdst = &c.out
	if c.tc != nil {
		c.pipe.r, c.pipe.w = &c.src, &c.out
		src, c.wdst = tlsSource{c.tc}, c.tc
		// The goroutine that served the connection so far read the
		// socket until it had a request: what came after it may be
		// waiting there, not announced by an edge of its own.
		c.src.ready = true
	}
	c.r = wire.NewPooledReader(src, &l.readBufs, clientReadBuf, l.p.o.MaxHeaderBytes)
	if err := l.watch(nc.fd, c); err != nil {
		l.p.o.Logger.Warn("event loop: cannot watch a client connection", "err", err)
		syscall.Close(nc.fd)
		l.clientGone(nc.tc != nil)
		return
	}
	l.clients[c] = struct{}{}
	c.idle()
	if c.tc != nil {
		// crypto/tls may hold the next request already, decrypted or
		// not, read from the socket with the one before; no event will
		// announce it.
		c.serveHeads()
	}
}

// idle waits for the next request head under the idle timeout, holding
// no request state.
func (c *lclient) idle() {
	c.putWork()
	if len(c.out.pending) == 0 && c.out.pending != nil {
		c.out.pending = nil
	}
	c.st = cIdle
	c.idleAt = c.l.now
	c.trimmed = false
	c.headerTimer = false
	c.deadline = c.l.now.Add(c.l.p.o.IdleTimeout)
}

func (c *lclient) onEvent(ev uint32) {
	c.src.event(ev)
	if len(c.out.pending) > 0 && ev&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
		if !c.out.flushPending() {
			if c.out.err != nil {
				c.abort()
			}
			return
		}
		switch c.st {
		case cRelay:
			c.relay()
			return
		case cFinishing:
			c.complete()
			return
		}
	}
	if c.st == cIdle && c.src.ready {
		c.serveHeads()
	}
}

// serveHeads serves the requests whose heads are buffered or arrive now,
// until one waits on its target or the client has sent nothing more.
func (c *lclient) serveHeads() {
	for !c.closed && c.st == cIdle {
		head, err := c.r.ReadHead(nil)
		if err == wire.ErrWouldBlock {
			if c.r.Buffered() == 0 {
				// Nothing of a next request yet: the buffer goes back
				// until the socket is readable again.
				c.r.Release()
			} else if !c.headerTimer {
				c.headerTimer = true
				c.deadline = c.l.now.Add(c.l.p.o.ReadHeaderTimeout)
			}
			return
		}
		if err != nil {
			if err == wire.ErrEmptyHead {
				c.close()
				return
			}
			// The goroutine engine answers what cannot be read as a head
			// (too large, bare LF, cut short) exactly as it does its own.
			c.handoff(nil, time.Time{})
			return
		}
		start := time.Now()
		if !c.l.e.begin() {
			c.close()
			return
		}
		c.startRequest(head, start)
	}
}

// startRequest serves a request the loop can serve alone, or hands the
// connection to the goroutine engine.
func (c *lclient) startRequest(head []byte, start time.Time) {
	p := c.l.p
	c.getWork()
	req := &c.req
	if err := wire.ParseRequest(head, req); err != nil ||
		req.HasBody() || req.Upgrade || req.ExpectContinue {
		c.handoff(head, start)
		return
	}
	x := &c.x
	p.startExchange(x, req, &c.client, start, protoName(req.Minor))
	if status, _ := p.begin(x); status != 0 {
		// The goroutine engine answers what the proxy answers itself; no
		// pool was acquired.
		c.handoff(head, start)
		return
	}
	c.head = head
	c.seq++
	c.attempts = 0
	c.lastErr = errAllTried
	c.st = cUpstream
	c.attempt()
}

// attempt sends the request to the next target the pool picks.
func (c *lclient) attempt() {
	x := &c.x
	for c.attempts < maxAttempts {
		t := x.pool.Pick(x.tried[:x.ntried])
		if t == nil {
			if c.attempts == 0 {
				c.fail(errNoTarget)
			} else {
				c.fail(c.lastErr)
			}
			return
		}
		ap, ok := t.AddrPort()
		if !ok {
			// A host name needs a resolver, which would block the loop.
			x.pool.Abort()
			x.pool = nil
			c.handoff(c.head, x.start)
			return
		}
		x.beginAttempt(t, c.l.now)
		c.attempts++
		x.attempts++
		u, err := c.l.upstreamConn(t, ap)
		if err != nil {
			c.lastErr = err
			if x.attemptFailed(t, err, false) {
				continue
			}
			c.fail(err)
			return
		}
		c.up = u
		u.owner = c
		c.l.p.writeRequestHead(u.w, x)
		c.respDeadline = x.start.Add(c.l.p.o.ResponseTimeout)
		c.deadline = c.respDeadline
		// The loop's sweep moves the request or ends the try (timeout).
		if c.moveOK = c.l.p.planWait(x, t); x.tryArmed {
			c.deadline = x.tryStart.Add(c.l.p.o.TryTimeout)
		}
		u.w.Flush()
		if u.out.err != nil {
			c.upstreamFailed(u.out.err)
		}
		return
	}
	c.fail(c.lastErr)
}

// upstreamFailed handles a failure of the attempt's connection before a
// response head was read: another target is tried when that is safe.
func (c *lclient) upstreamFailed(err error) {
	x := &c.x
	u := c.up
	stale := staleFailure(u.reused, x, err)
	c.moveOK = false
	c.l.closeUp(u)
	c.up = nil
	c.lastErr = err
	if x.attemptFailed(x.cur, err, stale) && c.attempts < maxAttempts {
		c.attempt()
		return
	}
	c.fail(err)
}

// upstreamClosed is called when CloseAll closed the target's connections
// (a drain's time ran out) while this request used one.
func (c *lclient) upstreamClosed() {
	switch c.st {
	case cUpstream:
		c.upstreamFailed(net.ErrClosed)
	case cRelay:
		c.bodyFailed(FailUpstreamBody)
	}
}

// onUpstream is called when the attempt's connection is readable.
func (c *lclient) onUpstream() {
	switch c.st {
	case cUpstream:
		c.readResponseHead()
	case cRelay:
		if len(c.out.pending) == 0 {
			c.relay()
		}
	}
}

func (c *lclient) readResponseHead() {
	x := &c.x
	u := c.up
	for {
		head, err := u.r.ReadHead(x.markByte)
		if err == wire.ErrWouldBlock {
			return
		}
		if err == nil {
			err = wire.ParseResponse(head, &x.resp)
		}
		if err != nil {
			c.upstreamFailed(err)
			return
		}
		x.gotByte = true
		c.moveOK = false
		// 1xx interim responses are dropped; 101 answers only an upgrade,
		// which the loop never sends.
		if x.resp.Status >= 200 || x.resp.Status == 101 {
			break
		}
		if x.tryArmed {
			// Bytes came: the request waits the response timeout now.
			x.tryArmed = false
			c.deadline = c.respDeadline
		}
	}
	x.headArrived(c.l.now)
	if x.resp.Status == 101 {
		c.l.closeUp(u)
		c.up = nil
		x.fail(FailUpstream)
		c.localAndClose(502, "502 Bad Gateway: unexpected 101 from the target\n")
		return
	}
	req := &c.req
	c.in, c.outF, c.keep = responseFraming(req, &x.resp, !req.Close, c.l.e.draining())
	writeResponseHead(c.w, &x.resp, c.outF, c.keep, req.Minor, x.setCookie)
	x.answered(x.resp.Status)
	x.rbody.Reset(u.r, c.in, x.resp.ContentLength)
	c.st = cRelay
	// An event stream ends cleanly at a drain's goodbye when its end can
	// be marked: by the last chunk, or by closing a close-delimited body.
	c.sse, c.bye = false, false
	if (c.outF == wire.FrameChunked || c.outF == wire.FrameClose) && isEventStream(&x.resp) {
		c.sse, c.es = true, eventStream{}
		x.holdLongLived(&loopBye{l: c.l, c: c, seq: c.seq})
	}
	c.relay()
}

// loopBye is the Goodbyer of an event stream a loop relays: Goodbye hands
// it to the loop, which owns the connection (evloop.drainWake).
type loopBye struct {
	l   *evloop
	c   *lclient
	seq uint64
}

func (g *loopBye) Goodbye() {
	g.l.mu.Lock()
	g.l.byes = append(g.l.byes, g)
	g.l.wakeLocked()
	g.l.mu.Unlock()
}

// goodbye ends the event stream being relayed at its next event boundary,
// or closes it at byeBy when the event does not end by then.
func (c *lclient) goodbye() {
	if c.closed || c.st != cRelay || !c.sse || c.bye {
		return
	}
	c.bye = true
	c.byeBy = c.l.now.Add(goodbyeGrace)
	if len(c.out.pending) == 0 {
		c.deadline = c.byeBy
		c.relay()
	}
}

// relay moves response body bytes from the target to the client until
// one of them must be waited on.
func (c *lclient) relay() {
	x := &c.x
	for len(c.out.pending) == 0 {
		if x.rbody.Done() || c.bye && c.es.atBoundary() {
			c.endBody()
			return
		}
		b, err := x.rbody.Next(64 << 10)
		if err == wire.ErrWouldBlock {
			// What arrived so far goes to the client now, so streamed
			// responses (SSE) arrive as produced.
			c.w.Flush()
			if c.out.err != nil {
				c.bodyFailed(FailClientGone)
				return
			}
			c.deadline = c.l.now.Add(c.l.p.o.UpstreamReadTimeout)
			if c.bye {
				c.deadline = c.byeBy
			}
			if len(c.out.pending) > 0 {
				c.deadline = c.l.now.Add(c.l.p.o.WriteTimeout)
			}
			return
		}
		if err == io.EOF {
			c.endBody()
			return
		}
		if err != nil {
			// The target failed mid-body: the client can only learn it by
			// the connection closing before the body's end.
			c.bodyFailed(FailUpstreamBody)
			return
		}
		if c.sse {
			b = b[:c.es.advance(b, c.bye)]
		}
		if c.outF == wire.FrameChunked {
			wire.WriteChunk(c.w, b)
		} else {
			c.w.Write(b)
		}
		x.bytesSent += int64(len(b))
		if c.out.err != nil {
			c.bodyFailed(FailClientGone)
			return
		}
	}
	c.deadline = c.l.now.Add(c.l.p.o.WriteTimeout)
}

func (c *lclient) endBody() {
	if c.outF == wire.FrameChunked {
		wire.WriteLastChunk(c.w)
	}
	c.w.Flush()
	if c.out.err != nil {
		c.bodyFailed(FailClientGone)
		return
	}
	if len(c.out.pending) > 0 {
		c.st = cFinishing
		c.deadline = c.l.now.Add(c.l.p.o.WriteTimeout)
		return
	}
	c.complete()
}

// complete ends a request whose response was sent in full.
func (c *lclient) complete() {
	x := &c.x
	u := c.up
	reusable := x.rbody.Done() && c.in != wire.FrameClose && !x.resp.Close && u.r.Buffered() == 0
	c.l.release(u, reusable)
	c.up = nil
	c.l.p.end(x)
	keep := c.l.e.end() && c.keep
	if !keep {
		c.close()
		return
	}
	c.r.Shrink()
	c.idle()
	c.serveHeads()
}

// bodyFailed ends a request whose response was cut, by the target or the
// client as f says, and closes the client connection.
func (c *lclient) bodyFailed(f Failure) {
	x := &c.x
	c.l.closeUp(c.up)
	c.up = nil
	if f == FailClientGone {
		x.clientGone()
	} else {
		x.fail(f)
	}
	c.w.Flush()
	c.l.p.end(x)
	c.close()
}

// fail answers a request no target answered with 502, 503 or 504.
func (c *lclient) fail(err error) {
	c.x.fail(failureOf(err))
	st, msg := failureStatus(err)
	c.localAndClose(st, msg)
}

// localAndClose answers from the proxy and closes the connection, as the
// goroutine engine does after a failed exchange.
func (c *lclient) localAndClose(status int, body string) {
	x := &c.x
	writeLocal(c.w, &c.req, status, body, nil, false)
	x.answeredLocally(status, len(body))
	c.w.Flush()
	c.l.p.end(x)
	c.close()
}

// timeout fires the deadline of the connection's state.
func (c *lclient) timeout() {
	switch c.st {
	case cIdle:
		if c.r.Buffered() == 0 || !c.headerTimer {
			c.close()
			return
		}
		// A head that did not arrive in time: 408, as the goroutine engine
		// answers it.
		c.getWork()
		c.req.Method, c.req.URI, c.req.Host = nil, nil, nil
		writeLocalError(c.w, &c.x, &c.req, &c.client, c.l.now, 408, reasonHeadTimeout)
		c.w.Flush()
		c.l.p.end(&c.x)
		c.close()
	case cUpstream:
		c.upstreamFailed(waitError(&c.x, os.ErrDeadlineExceeded, false))
	case cRelay, cFinishing:
		if len(c.out.pending) > 0 {
			// The client stopped reading.
			c.bodyFailed(FailClientGone)
		} else {
			c.bodyFailed(FailTimeout)
		}
	}
}

// moveIfDown sends a request waiting for its response head to another
// target when its target went down or was ejected and it may move.
func (c *lclient) moveIfDown() {
	if c.st != cUpstream || !c.moveOK {
		return
	}
	if x := &c.x; !x.cur.Healthy() && x.pool.HasOther(x.tried[:x.ntried], x.cur) {
		c.upstreamFailed(errMoved)
	}
}

// abort ends whatever the connection was doing and closes it.
func (c *lclient) abort() {
	switch c.st {
	case cUpstream:
		// The client went away while its request waited on a target:
		// nginx's 499, and no mark against the target.
		c.l.closeUp(c.up)
		c.up = nil
		c.x.attemptAbandoned(c.l.now)
		c.x.clientGone()
		c.l.p.end(&c.x)
		c.close()
	case cRelay, cFinishing:
		c.bodyFailed(FailClientGone)
	default:
		c.close()
	}
}

// close closes the client connection; the caller has ended its request.
func (c *lclient) close() {
	if c.closed {
		return
	}
	c.closed = true
	if c.tc != nil {
		// close_notify, as far as the socket takes it now.
		c.tc.Close()
	}
	c.l.forget(c.fd)
	syscall.Close(c.fd)
	delete(c.l.clients, c)
	c.l.clientGone(c.tc != nil)
	c.putWork()
	c.r.Free()
}

// handoff gives the connection to the goroutine engine: with the request
// head just read (its Tracker begun), or with none.
func (c *lclient) handoff(head []byte, start time.Time) {
	l := c.l
	c.closed = true
	l.forget(c.fd)
	delete(l.clients, c)
	l.clientGone(c.tc != nil)
	// The goroutine engine reads its own head and has its own writer; the
	// read buffer, with what was read, goes with the connection and back
	// to the engine's pool.
	c.putWork()
	if c.r.SetPool(l.p.clientBufs) {
		l.readBufs.Disown()
		l.p.clientBufs.Adopt()
	}
	f := os.NewFile(uintptr(c.fd), "client")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		l.p.o.Logger.Warn("event loop: cannot hand a connection over", "err", err)
		return
	}
	h := &Handoff{r: c.r, head: head, start: start}
	if c.tc != nil {
		// crypto/tls goes on over the pipe, blocking again; what it
		// buffered stays in it. Nothing is left to write: a connection
		// is handed over only between responses that were sent.
		h.socket = sock.Wrap(nc)
		c.pipe.nc = h.socket
		nc = c.tc
	}
	l.e.handoff(nc, h)
}

// lup is a connection to a target, owned by one loop.
type lup struct {
	l          *evloop
	t          *upstream.Target
	fd         int
	src        fdSource
	r          *wire.Reader
	out        outBuf
	w          *bufio.Writer
	owner      *lclient
	connecting bool
	reused     bool
	idleSince  time.Time
	// The target's generations when the connection was opened (allGen)
	// and last parked (idleGen); see upstream.Target.ExtConns.
	idleGen, allGen uint64
}

// upstreamConn returns an idle connection to t, or connects a new one.
func (l *evloop) upstreamConn(t *upstream.Target, ap netip.AddrPort) (*lup, error) {
	igen, agen, retired := t.ExtConns(0, 0)
	list := l.idle[t]
	for len(list) > 0 {
		u := list[len(list)-1]
		list = list[:len(list)-1]
		l.idle[t] = list
		t.ExtConns(0, -1)
		// Peeked at on the way out, as every engine does: bytes that
		// arrived while it sat idle belong to no request, even when the
		// loop has not yet seen their readiness event.
		if u.stale(igen, agen, retired, l.now) || !peerOpen(u.fd) {
			l.closeUp(u)
			continue
		}
		u.reused = true
		return u, nil
	}
	if len(list) == 0 {
		delete(l.idle, t)
	}
	if retired {
		return nil, &upstream.DialError{Err: upstream.ErrTargetClosed}
	}
	return l.dial(t, ap, agen)
}

// stale reports whether an idle connection must be closed rather than
// reused: CloseIdle or CloseAll was called since it was parked or opened
// (the target's generations moved on), the target retired, or it sat idle
// longer than the keep-alive timeout.
func (u *lup) stale(idleGen, allGen uint64, retired bool, now time.Time) bool {
	return u.idleGen != idleGen || u.allGen != allGen || retired ||
		now.Sub(u.idleSince) >= u.t.KeepaliveTimeout()
}

func (l *evloop) dial(t *upstream.Target, ap netip.AddrPort, agen uint64) (*lup, error) {
	var sa syscall.Sockaddr
	family := syscall.AF_INET
	if ap.Addr().Is4() {
		sa = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, &upstream.DialError{Err: os.NewSyscallError("socket", err)}
	}
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	// TCP keep-alive as net.Dialer sets it, to notice targets that vanish.
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1)
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 30)
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 30)
	connecting := false
	switch err := syscall.Connect(fd, sa); err {
	case nil:
	case syscall.EINPROGRESS:
		connecting = true
	default:
		syscall.Close(fd)
		return nil, &upstream.DialError{Err: os.NewSyscallError("connect", err)}
	}
	u := &lup{l: l, t: t, fd: fd, connecting: connecting, allGen: agen}
	u.src.fd = fd
	u.out.fd = fd
	u.out.held = connecting
	u.r = wire.NewReader(&u.src, 8<<10, t.MaxHeadBytes())
	u.w = bufio.NewWriterSize(&u.out, clientWriteBuf)
	if err := l.watch(fd, u); err != nil {
		syscall.Close(fd)
		return nil, &upstream.DialError{Err: os.NewSyscallError("epoll_ctl", err)}
	}
	l.ups[u] = struct{}{}
	t.ExtConns(1, 0)
	return u, nil
}

func (u *lup) onEvent(ev uint32) {
	if u.connecting {
		if ev&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) == 0 {
			return
		}
		soerr, err := syscall.GetsockoptInt(u.fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
		if err == nil && soerr != 0 {
			err = syscall.Errno(soerr)
		}
		if err != nil {
			if u.owner != nil {
				u.owner.upstreamFailed(&upstream.DialError{Err: os.NewSyscallError("connect", err)})
			} else {
				u.l.closeUp(u)
			}
			return
		}
		u.connecting = false
		u.out.held = false
	}
	u.src.event(ev)
	if len(u.out.pending) > 0 && ev&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
		if !u.out.flushPending() && u.out.err != nil {
			if u.owner != nil && u.owner.st == cUpstream {
				u.owner.upstreamFailed(u.out.err)
			} else {
				u.l.closeUp(u)
			}
			return
		}
	}
	if !u.src.ready {
		return
	}
	if u.owner == nil {
		// An idle connection became readable: the target closed it, or
		// sent bytes nobody asked for. Either way it is done.
		u.l.closeUp(u)
		return
	}
	u.owner.onUpstream()
}

// release parks a connection whose response was read completely, or
// closes it.
func (l *evloop) release(u *lup, reusable bool) {
	if u == nil {
		return
	}
	u.owner = nil
	igen, agen, retired := u.t.ExtConns(0, 0)
	list := l.idle[u.t]
	if !reusable || agen != u.allGen || retired || len(list) >= u.t.MaxIdle() {
		l.closeUp(u)
		return
	}
	u.idleGen = igen
	u.idleSince = l.now
	u.reused = false
	l.idle[u.t] = append(list, u)
	u.t.ExtConns(0, 1)
}

// closeUp closes an upstream connection, taking it out of the idle list
// if it is there.
func (l *evloop) closeUp(u *lup) {
	if u == nil {
		return
	}
	if _, ok := l.ups[u]; !ok {
		return
	}
	if u.owner == nil {
		list := l.idle[u.t]
		for i, v := range list {
			if v == u {
				l.idle[u.t] = append(list[:i], list[i+1:]...)
				u.t.ExtConns(0, -1)
				break
			}
		}
	}
	delete(l.ups, u)
	l.forget(u.fd)
	syscall.Close(u.fd)
	u.t.ExtConns(-1, 0)
}

// peerOpen reports whether an idle connection is still open, by peeking
// without blocking: a closed connection reads EOF at once.
func peerOpen(fd int) bool {
	var buf [1]byte
	n, _, err := syscall.Recvfrom(fd, buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return errors.Is(err, syscall.EAGAIN) && n <= 0
}
