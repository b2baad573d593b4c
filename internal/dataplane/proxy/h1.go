package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/dataplane/wire"
)

// ConnInfo describes the listener a client connection came from.
type ConnInfo struct {
	TLS bool
	// Redirect answers every request with a 308 to https://host[:HTTPSPort].
	Redirect bool
	// HTTPSPort is the port put in redirects; "" or "443" is left out.
	HTTPSPort string
	// Challenge, when set on a redirecting listener, answers ACME HTTP-01
	// requests (GET /.well-known/acme-challenge/TOKEN) before the
	// redirect: it gets the host (without port) and the request target and
	// returns the key authorization, or ok false to redirect as usual.
	// The event loops never serve a redirecting listener, so only the
	// goroutine engine consults it.
	Challenge func(host, target string) (body string, ok bool)
	// Track is told when requests begin and end, for graceful shutdown.
	Track Tracker
	// Park, when set on a TLS connection, lets ServeConn park it while it
	// is idle (see Parker): ServeConn may then return before the
	// connection is closed, and Park.Closed says when it is.
	Park Parker
	// Handover, when set on a TLS connection, is called when the
	// connection has answered a request and waits for the next one, with
	// nothing of it buffered: true means another engine took the
	// connection (Loops.AddTLS), and ServeConn returns without closing it
	// or calling Park.Closed; false, that the connection waits here.
	//
	// Why not at once after the handshake: a client that sends one request
	// per connection is then served where its handshake ran, with no move
	// at all; only keep-alive connections, which wait, move.
	Handover func() bool
}

// Tracker follows a connection's requests so that a shutting-down server
// can close idle connections at once and busy ones after their response.
type Tracker interface {
	// Begin is called when a request head has arrived. false: the server
	// is closing and the connection must be closed without serving it.
	Begin() bool
	// End is called when a response is done. false: close the connection.
	End() bool
	// Closing reports whether the server is shutting down, so responses
	// say "Connection: close" and clients do not reuse the connection.
	Closing() bool
}

// Buffer sizes of a client connection: most request heads fit in 4 KiB;
// larger ones grow the buffer up to MaxHeaderBytes.
const (
	clientReadBuf  = 4 << 10
	clientWriteBuf = 4 << 10
)

// clientConn is one HTTP/1.1 client connection.
type clientConn struct {
	p      *Proxy
	nc     net.Conn
	info   ConnInfo
	r      *wire.Reader
	client forward.Client
	// h1work is the request's state; nil between requests over TLS.
	*h1work
	// headerDeadline is c.setHeaderDeadline as a value made once, so
	// passing it per request does not allocate.
	headerDeadline func()
	// rdl and wdl are the client connection's deadlines, moved lazily.
	rdl, wdl upstream.Deadline
	// lazy: the connection waits for a request holding no read buffer,
	// reading its first bytes into first (see waitIdle).
	lazy  bool
	first [16]byte
	// idleAt is when the wait for the next request times out; zero while
	// a request is served.
	idleAt time.Time
	// served says a request was answered (and the connection kept).
	served bool
	// While parked (see Parker): parkKey is the connection's key in the
	// parker (0 when not parked), rc its socket; wake is made once.
	parkKey uint64
	rc      syscall.RawConn
	wake    func()
}

// step is what serveOne leaves the connection to do next.
type step int8

const (
	stepNext   step = iota // serve the next request
	stepClose              // close the connection
	stepParked             // nothing: the connection is parked, and its goroutine must leave it
)

// h1work is what a goroutine engine's client connection needs only while
// it serves a request: the parsed head, the request body's framing, the
// exchange and the response writer. A TLS connection borrows it from a
// pool (Proxy.h1work) per request, so an idle one does not hold it.
type h1work struct {
	w    *bufio.Writer
	req  wire.Request
	body wire.Body
	x    exchange
}

// getWork lends c the state of a request.
func (c *clientConn) getWork() {
	if c.h1work != nil {
		return
	}
	c.h1work = c.p.h1work.Get().(*h1work)
	c.p.h1lent.Add(1)
	if c.w == nil {
		c.w = bufio.NewWriterSize(c.nc, clientWriteBuf)
	} else {
		c.w.Reset(c.nc)
	}
}

// putWork returns the state of c's request, which has ended.
func (c *clientConn) putWork() {
	if wk := c.h1work; wk != nil {
		c.h1work = nil
		// What the writer and the body read from are this connection's.
		wk.w.Reset(nil)
		wk.body.Reset(nil, wire.FrameNone, 0)
		c.p.h1work.Put(wk)
		c.p.h1lent.Add(-1)
	}
}

// ServeConn serves HTTP/1.1 requests on nc until the client closes it, an
// error makes it unusable, or the server shuts down. nc is closed on return,
// unless info.Park is set: then an idle TLS connection may be parked (see
// Parker) and served on by other goroutines, and info.Park.Closed says when
// it is closed.
//
// Over TLS the connection holds no read buffer or request state while it
// waits for a request: only crypto/tls's own state, and the goroutine until
// it parks. (The read that waits is a small one into the connection's
// struct; what else the record carried stays decrypted in crypto/tls for
// the next read, so it costs no system call. A plain socket would pay one.)
func (p *Proxy) ServeConn(nc net.Conn, info ConnInfo) {
	var r *wire.Reader
	if info.TLS {
		r = wire.NewPooledReader(nc, p.clientBufs, clientReadBuf, p.o.MaxHeaderBytes)
	} else {
		r = wire.NewReader(nc, clientReadBuf, p.o.MaxHeaderBytes)
	}
	c := p.newClientConn(nc, info, r)
	c.lazy = info.TLS
	c.serve()
}

// serve serves c's requests until it is closed or parked.
func (c *clientConn) serve() {
	for {
		switch c.serveOne() {
		case stepNext:
			continue
		case stepParked:
			// Another goroutine may own c already.
			return
		}
		break
	}
	c.done()
	if c.info.Park != nil {
		c.info.Park.Closed()
	}
}

// resume serves c, which was parked, on a new goroutine: its socket was
// readable, its idle timeout passed, or its closer woke it.
func (c *clientConn) resume() {
	now := time.Now()
	// The deadline in force is the one that parked it.
	c.rdl.Clear(c.nc.SetReadDeadline)
	c.rdl.Extend(now, c.idleAt.Sub(now), c.nc.SetReadDeadline)
	c.serve()
}

// canPark reports whether c may park while idle.
func (c *clientConn) canPark() bool { return parkSupported && c.lazy && c.info.Park != nil }

// park parks c; false when it could not be parked and waits no more.
func (c *clientConn) park() bool {
	if c.wake == nil {
		c.wake = func() { c.p.parker.wake(c) }
		c.info.Park.Parking(c.wake)
	}
	if tc, ok := c.nc.(*tls.Conn); ok {
		c.p.tlsTrim.trim(tc)
	}
	return c.p.parker.park(c)
}

func (p *Proxy) newClientConn(nc net.Conn, info ConnInfo, r *wire.Reader) *clientConn {
	c := &clientConn{
		p:      p,
		nc:     nc,
		info:   info,
		r:      r,
		client: forward.NewClient(nc.RemoteAddr(), info.TLS, p.o.Trusted),
	}
	c.headerDeadline = c.setHeaderDeadline
	return c
}

// done closes the connection and returns what it borrowed.
func (c *clientConn) done() {
	c.nc.Close()
	c.putWork()
	c.r.Free()
}

// waitIdle waits, holding no buffer, for the first bytes of the next
// request, and puts them in the reader. stepClose: none came (the client
// closed the connection, the idle timeout passed, or the server closed
// it); stepParked: none came within ParkAfter, and c is parked.
func (c *clientConn) waitIdle() step {
	c.r.Release()
	if c.served && c.info.Handover != nil && c.info.Handover() {
		return stepParked
	}
	if c.idleAt.IsZero() {
		now := time.Now()
		c.idleAt = now.Add(c.p.o.IdleTimeout)
		wait := c.p.o.IdleTimeout
		if c.canPark() {
			wait = min(wait, c.p.o.ParkAfter)
		}
		c.rdl.Extend(now, wait, c.nc.SetReadDeadline)
	}
	n, err := c.nc.Read(c.first[:])
	if n == 0 {
		// A timeout before the idle timeout's is the one to park at:
		// crypto/tls takes a timeout for a temporary error and leaves the
		// connection usable. Any other read error with no byte is the end
		// of the connection, as it is for ReadHead with nothing buffered;
		// one that came with bytes is returned again by the next read.
		if isTimeout(err) && c.canPark() && time.Now().Before(c.idleAt) && c.park() {
			return stepParked
		}
		return stepClose
	}
	c.idleAt = time.Time{}
	c.r.Preload(c.first[:n])
	return stepNext
}

// Handoff is a connection an event loop gives to the goroutine engine, with
// what the loop had read of it.
type Handoff struct {
	r *wire.Reader
	// head is a request head the loop read and left for the goroutine
	// engine to serve, its Tracker begun; nil when none was read.
	head  []byte
	start time.Time
	// socket is a TLS connection's TCP connection; nil for plain HTTP.
	socket net.Conn
}

// Begun reports whether the handed-off connection is in the middle of a
// request (its Tracker's Begin was called).
func (h *Handoff) Begun() bool { return h.head != nil }

// Socket is the TCP connection under a handed-off TLS connection (closing
// it ends the connection without a goodbye), or nil for plain HTTP.
func (h *Handoff) Socket() net.Conn { return h.socket }

// ServeHandoff serves a connection an event loop handed over, like
// ServeConn: first the request the loop read, if any, then the following
// ones. nc is closed on return.
func (p *Proxy) ServeHandoff(nc net.Conn, h *Handoff, info ConnInfo) {
	h.r.SetSource(nc)
	info.Park = nil
	info.TLS = h.socket != nil
	c := p.newClientConn(nc, info, h.r)
	defer c.done()
	if h.head != nil {
		keep := c.serveRequest(h.head, h.start)
		if info.Track != nil && !info.Track.End() {
			keep = false
		}
		if !keep {
			return
		}
	}
	for c.serveOne() == stepNext {
	}
}

func (c *clientConn) setHeaderDeadline() {
	c.rdl.Extend(time.Now(), c.p.o.ReadHeaderTimeout, c.nc.SetReadDeadline)
}

// serveOne reads and answers one request, or parks the connection.
func (c *clientConn) serveOne() step {
	c.r.Shrink()
	if c.lazy && c.r.Buffered() == 0 {
		if st := c.waitIdle(); st != stepNext {
			return st
		}
	} else {
		c.rdl.Extend(time.Now(), c.p.o.IdleTimeout, c.nc.SetReadDeadline)
	}
	if !c.serveHead() {
		return stepClose
	}
	c.served = true
	return stepNext
}

// serveHead reads the request head whose first bytes are buffered or
// arrive now, and serves the request; it reports whether the connection
// stays open for another.
func (c *clientConn) serveHead() bool {
	head, err := c.r.ReadHead(c.headerDeadline)
	c.getWork()
	if c.lazy {
		// Plain connections keep theirs: they hold their read buffer
		// anyway, and a pool's Get and Put per request are not free.
		defer c.putWork()
	}
	if err != nil {
		if err == wire.ErrEmptyHead || errors.Is(err, net.ErrClosed) || isTimeout(err) && c.r.Buffered() == 0 {
			return false
		}
		var ne net.Error
		if errors.As(err, &ne) && !ne.Timeout() || errors.Is(err, io.ErrUnexpectedEOF) {
			return false
		}
		st := wire.StatusFor(err)
		if isTimeout(err) {
			st = 408
		}
		// No request line was read: log the failure without request fields.
		c.req.Method, c.req.URI, c.req.Host = nil, nil, nil
		c.localError(time.Now(), st, headErrorReason(err))
		return false
	}
	start := time.Now()
	if c.info.Track != nil && !c.info.Track.Begin() {
		return false
	}
	keep := c.serveRequest(head, start)
	if c.info.Track != nil && !c.info.Track.End() {
		keep = false
	}
	return keep
}

func (c *clientConn) serveRequest(head []byte, start time.Time) (keep bool) {
	c.getWork()
	if err := wire.ParseRequest(head, &c.req); err != nil {
		c.localError(start, wire.StatusFor(err), headErrorReason(err))
		return false
	}
	req := &c.req
	x := &c.x
	c.p.startExchange(x, req, &c.client, start, protoName(req.Minor))
	switch {
	case req.Chunked:
		c.body.Reset(c.r, wire.FrameChunked, 0)
		x.body, x.reqFraming = &c.body, wire.FrameChunked
	case req.ContentLength > 0:
		c.body.Reset(c.r, wire.FrameLength, req.ContentLength)
		x.body, x.reqFraming, x.reqLength = &c.body, wire.FrameLength, req.ContentLength
	default:
		c.body.Reset(c.r, wire.FrameNone, 0)
	}
	// A body is read under the read timeout, not the header timeout.
	if x.body != nil {
		c.rdl.Extend(start, c.p.o.ReadTimeout, c.nc.SetReadDeadline)
	}

	if c.info.Redirect {
		if keep, ok := c.challenge(start); ok {
			return keep
		}
		return c.redirect(start)
	}
	if status, body := c.p.begin(x); status != 0 {
		return c.local(start, status, body)
	}
	if req.ExpectContinue && x.body != nil {
		// Answer 100 Continue here, as nginx does, so the body can be
		// streamed to the target without waiting on it.
		c.w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := c.flush(start); err != nil {
			x.clientGone()
			c.p.end(x)
			return false
		}
	}
	if err := c.p.roundTrip(context.Background(), x); err != nil {
		x.fail(failureOf(err))
		// The connection closes after a failed exchange: the answer says
		// so, or a keep-alive client's next request meets a closed socket.
		req.Close = true
		var cbe *clientBodyError
		if errors.As(err, &cbe) {
			code, msg := clientBodyStatus(err)
			c.local(start, code, msg)
			return false
		}
		st, msg := failureStatus(err)
		c.local(start, st, msg)
		return false
	}
	return c.relayResponse(start)
}

// relayResponse writes x.resp and its body to the client.
func (c *clientConn) relayResponse(start time.Time) (keep bool) {
	x := &c.x
	req := &c.req
	resp := &x.resp
	w := c.w
	keep = !req.Close

	if resp.Status == 101 {
		if !req.Upgrade {
			x.finish(false)
			x.fail(FailUpstream)
			c.local(start, 502, "502 Bad Gateway: unexpected 101 from the target\n")
			return false
		}
		return c.upgrade(start)
	}

	in, out, keep := responseFraming(req, resp, keep, c.draining())
	writeResponseHead(w, resp, out, keep, req.Minor, x.setCookie)
	x.answered(resp.Status)

	x.rbody.Reset(x.uc.R, in, resp.ContentLength)
	// An event stream ends cleanly at a drain's goodbye when its end can
	// be marked: by the last chunk, or by closing a close-delimited body.
	x.holdEventStream(out == wire.FrameChunked || out == wire.FrameClose)
	var clientErr error
	for !x.rbody.Done() {
		if !x.rbody.Buffered() && w.Buffered() > 0 {
			// The next read may block: what arrived so far goes to the
			// client now, so streamed responses (SSE) arrive as produced.
			if clientErr = c.flush(start); clientErr != nil {
				break
			}
		}
		b, end, err := c.p.nextBody(x)
		if end || err == io.EOF {
			break
		}
		if err != nil {
			// The target failed mid-body: the client can only learn it by
			// the connection closing before the body's end.
			x.finish(false)
			x.fail(FailUpstreamBody)
			if isTimeout(err) {
				x.failure = FailTimeout
			}
			c.w.Flush()
			c.p.end(x)
			return false
		}
		if out == wire.FrameChunked {
			wire.WriteChunk(w, b)
		} else {
			w.Write(b)
		}
		x.bytesSent += int64(len(b))
	}
	if clientErr == nil {
		if out == wire.FrameChunked {
			wire.WriteLastChunk(w)
		}
		clientErr = c.flush(start)
	}
	x.finish(clientErr == nil && x.rbody.Done() && in != wire.FrameClose && !resp.Close)
	if clientErr != nil {
		x.clientGone()
	}
	c.p.end(x)
	if clientErr != nil {
		return false
	}
	return keep && c.bodyConsumed()
}

// bodyConsumed reports whether the request body was read to its end, so the
// connection is positioned at the next request.
func (c *clientConn) bodyConsumed() bool {
	return c.x.body == nil || c.body.Done()
}

// draining reports whether the connection should close after this
// response because the server is shutting down.
func (c *clientConn) draining() bool { return c.info.Track != nil && c.info.Track.Closing() }

func (c *clientConn) flush(start time.Time) error {
	c.wdl.Extend(time.Now(), c.p.o.WriteTimeout, c.nc.SetWriteDeadline)
	return c.w.Flush()
}

// local answers the current request from the proxy itself (no upstream)
// and reports whether the connection stays open: only when the request had
// no body left unread.
func (c *clientConn) local(start time.Time, status int, body string) (keep bool) {
	keep = !c.req.Close && c.bodyConsumed() && !c.draining()
	c.writeLocal(status, body, nil, keep)
	c.x.answeredLocally(status, len(body))
	if c.x.uc != nil {
		c.x.finish(false)
	}
	err := c.flush(start)
	c.p.end(&c.x)
	return keep && err == nil
}

// localError answers a request that could not be parsed and is followed by
// closing the connection.
func (c *clientConn) localError(start time.Time, status int, reason string) {
	writeLocalError(c.w, &c.x, &c.req, &c.client, start, status, reason)
	c.flush(start)
	c.p.end(&c.x)
}

func (c *clientConn) writeLocal(status int, body string, extra []string, keep bool) {
	writeLocal(c.w, &c.req, status, body, extra, keep)
}

// acmeChallengePath is where ACME CAs fetch HTTP-01 answers (RFC 8555
// section 8.3); they follow no redirect to HTTPS for a first certificate.
const acmeChallengePath = "/.well-known/acme-challenge/"

// challenge answers an ACME HTTP-01 request through info.Challenge; ok is
// false when the request is not one it answers, which is then redirected.
func (c *clientConn) challenge(start time.Time) (keep, ok bool) {
	if c.info.Challenge == nil || string(c.req.Method) != "GET" ||
		!bytes.HasPrefix(c.req.URI, []byte(acmeChallengePath)) {
		return false, false
	}
	body, ok := c.info.Challenge(string(hostWithoutPort(c.req.Host)), string(c.req.URI))
	if !ok {
		return false, false
	}
	return c.local(start, 200, body), true
}

// hostWithoutPort strips a port from a Host value, leaving IPv6 brackets.
func hostWithoutPort(host []byte) []byte {
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && !bytes.HasSuffix(host, []byte("]")) {
		return host[:i]
	}
	return host
}

// redirect answers with a 308 to the same host, path and query on HTTPS,
// as the seed's nginx `return 308 https://$host$request_uri` does; 308
// keeps the method and body, unlike 301.
func (c *clientConn) redirect(start time.Time) bool {
	var loc bytes.Buffer
	loc.WriteString("https://")
	host := hostWithoutPort(c.req.Host)
	if len(host) == 0 {
		return c.local(start, 400, "400 Bad Request: a redirect to HTTPS needs a Host\n")
	}
	loc.Write(host)
	if port := c.info.HTTPSPort; port != "" && port != "443" {
		loc.WriteByte(':')
		loc.WriteString(port)
	}
	loc.Write(c.req.URI)
	keep := !c.req.Close && c.bodyConsumed() && !c.draining()
	body := "308 Permanent Redirect\n"
	c.writeLocal(308, body, []string{"Location", loc.String()}, keep)
	c.x.answeredLocally(308, len(body))
	err := c.flush(start)
	c.p.end(&c.x)
	return keep && err == nil
}
