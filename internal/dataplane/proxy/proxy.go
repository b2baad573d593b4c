// Package proxy forwards requests to the active pool of the service their
// Host routes to. It has three front ends that share everything behind them
// (routing, pool accounting, balancing, retries, forwarding headers, response
// framing, the proxy's own responses and the access log):
//
//   - Loops, event loops for plain HTTP/1.1 on Linux (one per processor,
//     each with its own epoll set of client and upstream connections), which
//     serve requests without a body or upgrade and hand any other to
//     ServeHandoff;
//   - ServeConn, a purpose-built HTTP/1.1 engine with a goroutine per client
//     connection, for TLS connections, hand-offs and listen.engine:
//     goroutines: heads parsed in place by package wire, bodies relayed from
//     buffer to buffer, no per-connection goroutines towards upstreams;
//   - HTTP2Handler, the stream handler of package h2's HTTP/2 engine.
//
// Why not httputil.ReverseProxy: on the benchmark workload (bench/run) it
// reaches 0.54x nginx's requests per second and 0.41x its requests per CPU
// second; the goroutine engine reached 0.93x and 0.95x, the event loops
// 1.11x and 1.15x. Most of httputil's cost is the Transport's
// per-connection goroutines and channel hand-offs and the header maps
// allocated and cloned per request; why the loops beat the goroutine
// engine is in Loops' documentation. docs/benchmarks.md has the numbers.
package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutover/cutover/internal/dataplane/accesslog"
	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/dataplane/wire"
)

// Options configure a Proxy. Zero durations take the configuration file's
// defaults.
type Options struct {
	Router    *route.Router
	AccessLog *accesslog.Logger // nil: no access log
	Trusted   *forward.Trusted
	Logger    *slog.Logger

	ReadHeaderTimeout time.Duration // a request head must arrive within this
	IdleTimeout       time.Duration // keep-alive wait for the next request
	ReadTimeout       time.Duration // between two reads of a request body
	WriteTimeout      time.Duration // between two writes to the client
	MaxHeaderBytes    int

	ResponseTimeout     time.Duration // upstream: request sent → response head
	UpstreamReadTimeout time.Duration // upstream: between two reads of a body

	// Observers are told of every finished request (see Outcome), on
	// every engine, after its accounting and before its access log line.
	Observers []Observer
	// TryTimeout, when set, is how long a request that may be sent again
	// (see exchange.movable) waits for a response head on one target
	// before it is sent to another healthy one; 0 waits ResponseTimeout.
	TryTimeout time.Duration
	// ParkAfter is how long an HTTP/1.1-over-TLS connection waits for its
	// next request on its goroutine before it is parked (see Parker); it
	// matters only below IdleTimeout and where parking is supported.
	ParkAfter time.Duration
}

func (o *Options) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&o.ReadHeaderTimeout, 10*time.Second)
	set(&o.IdleTimeout, 75*time.Second)
	set(&o.ReadTimeout, 60*time.Second)
	set(&o.WriteTimeout, 60*time.Second)
	set(&o.ResponseTimeout, 60*time.Second)
	set(&o.UpstreamReadTimeout, 60*time.Second)
	set(&o.ParkAfter, defaultParkAfter)
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 32 << 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
}

// Proxy is the forwarding engine. It is safe for concurrent use.
type Proxy struct {
	o      Options
	ids    *forward.IDs
	h2pool sync.Pool
	// clientBufs lends the goroutine engine's client connections their
	// read buffers while they have bytes to hold.
	clientBufs *wire.SyncBuffers
	h1work     sync.Pool
	h1lent     atomic.Int64
	// parker holds the idle TLS connections parked (see Parker).
	parker    parker
	parkStats parkStats
	tlsTrim   tlsTrim
}

// Held is what the goroutine engine's client connections hold now: read
// buffers from the pool, and request states (a head, its exchange and the
// response writer). A TLS connection waiting for its next request holds
// neither; tests and diagnostics use it to see that memory follows the
// requests under way, not the connections open.
func (p *Proxy) Held() (readBufs, works int64) {
	return p.clientBufs.Lent(), p.h1lent.Load()
}

// New returns a Proxy.
func New(o Options) *Proxy {
	o.defaults()
	p := &Proxy{o: o, ids: forward.NewIDs(), clientBufs: wire.NewSyncBuffers(clientReadBuf)}
	p.h2pool.New = func() any { return new(h2State) }
	p.h1work.New = func() any { return new(h1work) }
	p.parker.init()
	p.tlsTrim = newTLSTrim()
	return p
}

// maxAttempts bounds the targets one request is tried on.
const maxAttempts = 8

// Errors that decide the status of a failed exchange.
var (
	errNoTarget = errors.New("the pool has no targets")
	errAllTried = errors.New("no target of the pool could be reached")
	// errClientGone ends an exchange whose client went away before the
	// response: nobody is left to answer.
	errClientGone = errors.New("the client went away")
	// errTryTimeout ends an attempt that waited TryTimeout; errMoved one
	// whose target went down or was ejected while it waited. Neither is a
	// net.Error timeout: the request may go to another target.
	errTryTimeout = errors.New("no response head within upstream.try_timeout")
	errMoved      = errors.New("the target went down or was ejected while the request waited")
)

// roundTrip sends the request to a target of x.pool and reads the response
// head, trying other targets when that is safe: always when the connection
// could not be made (nothing was sent), and when the request is idempotent
// and has no body and no response byte arrived. A request whose body was
// sent is never sent again.
func (p *Proxy) roundTrip(ctx context.Context, x *exchange) error {
	var lastErr error = errAllTried
	for attempt := 0; attempt < maxAttempts; attempt++ {
		t := x.pool.Pick(x.tried[:x.ntried])
		if t == nil {
			if attempt == 0 {
				return errNoTarget
			}
			return lastErr
		}
		x.beginAttempt(t, time.Now())
		x.attempts++
		stale, err := p.try(ctx, x, t)
		if err == nil {
			x.headArrived(time.Now())
			return nil
		}
		if ctx.Err() != nil {
			// The client reset its stream: the failure is its own doing,
			// not the target's, and nobody waits for another try.
			x.attemptAbandoned(time.Now())
			return errClientGone
		}
		lastErr = err
		if !x.attemptFailed(t, err, stale) {
			return err
		}
	}
	return lastErr
}

// beginAttempt counts an attempt of the request on t, begun at now. Both
// engines begin attempts here.
func (x *exchange) beginAttempt(t *upstream.Target, now time.Time) {
	x.cur, x.tryStart, x.tryArmed, x.gotByte = t, now, false, false
	t.Begin()
	t.Await(now)
}

// headArrived records that the response head of the attempt on x.cur
// arrived at now: its latency and status feed the balancer and outlier
// detection.
func (x *exchange) headArrived(now time.Time) {
	x.target = x.cur
	x.cur.Answered(x.tryStart, now, x.resp.Status)
}

// attemptAbandoned ends the accounting of an attempt whose client went
// away while it waited.
func (x *exchange) attemptAbandoned(now time.Time) {
	x.cur.Failed(x.tryStart, now, upstream.NotTargetFault, nil)
	x.cur.End(false)
}

// movable reports whether the request, now waiting for a response head,
// may be sent to another target instead: it is idempotent and nothing of
// its body or of a response was consumed.
func (x *exchange) movable() bool {
	return x.req.Idempotent() && !x.bodySent && !x.gotByte
}

// planWait decides how the attempt on t, its request sent, waits for the
// response head. moveOK says the request may go to another target if t goes
// down or is ejected meanwhile: it may be sent again, and another healthy
// target is there to take it. Then, when TryTimeout ends the wait before
// ResponseTimeout does, x.tryArmed is set: the wait ends at
// x.tryStart+TryTimeout. Both engines plan waits here.
func (p *Proxy) planWait(x *exchange, t *upstream.Target) (moveOK bool) {
	x.tryArmed = false
	if !x.movable() || !x.pool.HasOther(x.tried[:x.ntried], t) {
		return false
	}
	x.tryArmed = p.o.TryTimeout > 0 && x.tryStart.Add(p.o.TryTimeout).Before(x.start.Add(p.o.ResponseTimeout))
	return true
}

// waitError names the failure of a wait for a response head: a timeout of
// an armed try is errTryTimeout, a wait cut short errMoved.
func waitError(x *exchange, err error, moved bool) error {
	switch {
	case moved:
		return errMoved
	case x.tryArmed && !x.gotByte && isTimeout(err):
		return errTryTimeout
	}
	return err
}

// staleFailure reports whether a failed attempt on a reused connection
// says nothing about the target: before any response byte, the target most
// likely closed the connection while it was idle. A timeout is never that:
// the connection was open and the target did not answer.
func staleFailure(reused bool, x *exchange, err error) bool {
	return reused && !x.gotByte && !isTimeout(err) && err != errMoved && err != errTryTimeout
}

// attemptFailed ends the accounting of a failed attempt on t, tells the
// target what the failure says about it (passive health and outlier
// detection), and reports whether the request may be tried on another
// target. Both engines decide retries here.
func (x *exchange) attemptFailed(t *upstream.Target, err error, stale bool) (retry bool) {
	t.End(false)
	var cbe *clientBodyError
	if errors.As(err, &cbe) {
		// The client's body broke off: nothing to hold against the
		// target, and the request cannot be sent again.
		t.Failed(x.tryStart, time.Now(), upstream.NotTargetFault, err)
		return false
	}
	if !stale {
		x.noteAttemptFailure(t, err)
	}
	var de *upstream.DialError
	isDial := errors.As(err, &de)
	f := upstream.ConnBroken // a fresh connection that failed: the target is in trouble
	switch {
	case isDial && errors.Is(err, upstream.ErrTargetClosed), stale, err == errMoved:
		f = upstream.NotTargetFault
	case isDial:
		f = upstream.ConnectFailed
	case err == errTryTimeout:
		f = upstream.TryTimeout
	case isTimeout(err):
		f = upstream.ResponseTimeout
	}
	t.Failed(x.tryStart, time.Now(), f, err)
	if !stale && x.ntried < len(x.tried) {
		x.tried[x.ntried] = t
		x.ntried++
	}
	if isDial || err == errMoved || err == errTryTimeout {
		// Nothing of a response reached the client: planWait allowed it.
		return true
	}
	return !(x.bodySent || x.gotByte || isTimeout(err) || !x.req.Idempotent())
}

// try sends the request on one connection to t and reads the response
// head. stale reports a failure on a reused connection before any response
// byte: most likely the target closed it while idle, which says nothing
// about the target's health.
func (p *Proxy) try(ctx context.Context, x *exchange, t *upstream.Target) (stale bool, err error) {
	uc, err := t.Get(ctx)
	if err != nil {
		return false, err
	}
	x.uc = uc
	if ctx.Done() != nil {
		// An HTTP/2 client that resets its stream ends the attempt at
		// once: the target's connection is not left waiting on a response
		// nobody will read (a rapid reset would otherwise hold one per
		// stream for upstream.response_timeout).
		stop := context.AfterFunc(ctx, func() { uc.Conn.Close() })
		defer stop()
	}
	uc.ReadDL.Extend(x.start, p.o.ResponseTimeout, uc.SetReadDeadline)
	uc.WriteDL.Extend(x.start, p.o.ResponseTimeout, uc.SetWriteDeadline)
	if err := p.writeRequest(x); err != nil {
		t.Discard(uc)
		x.uc = nil
		return uc.Reused && !x.bodySent && !isTimeout(err), err
	}
	if p.planWait(x, t) {
		uc.AwaitMovable()
		if x.tryArmed {
			uc.ReadDL.Extend(x.tryStart, p.o.TryTimeout, uc.SetReadDeadline)
		}
	}
	for {
		head, err := uc.R.ReadHead(x.markByte)
		if err == nil {
			err = wire.ParseResponse(head, &x.resp)
		}
		if moved := !uc.Settle(); moved || err != nil {
			t.Discard(uc)
			x.uc = nil
			err = waitError(x, err, moved)
			return staleFailure(uc.Reused, x, err), err
		}
		x.gotByte = true
		// 1xx interim responses other than 101 are dropped: 100 Continue
		// was already answered to the client by the proxy itself.
		if x.resp.Status >= 200 || x.resp.Status == 101 {
			return false, nil
		}
		if x.tryArmed {
			// Bytes came: the request can no longer move, and waits the
			// response timeout.
			x.tryArmed = false
			uc.ReadDL.Clear(uc.SetReadDeadline)
			uc.ReadDL.Extend(x.start, p.o.ResponseTimeout, uc.SetReadDeadline)
		}
	}
}

// writeRequest writes the request head and body to x.uc.
func (p *Proxy) writeRequest(x *exchange) error {
	w := x.uc.W
	p.writeRequestHead(w, x)
	if x.body != nil && x.reqFraming != wire.FrameNone {
		x.bodySent = true
		for !x.body.Done() {
			b, err := x.body.Next(32 << 10)
			if err == io.EOF {
				break
			}
			if err != nil {
				return &clientBodyError{err}
			}
			x.bytesIn += int64(len(b))
			if x.reqFraming == wire.FrameChunked {
				wire.WriteChunk(w, b)
			} else {
				w.Write(b)
			}
		}
		if x.reqFraming == wire.FrameChunked {
			wire.WriteLastChunk(w)
		}
	}
	return w.Flush()
}

// clientBodyError is a failure to read the request body from the client;
// the client, not the target, is at fault.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "reading request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
