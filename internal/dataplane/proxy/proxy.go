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
//   - ServeHTTP, an http.Handler for HTTP/2 clients (served by x/net/http2).
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
}

// New returns a Proxy.
func New(o Options) *Proxy {
	o.defaults()
	p := &Proxy{o: o, ids: forward.NewIDs()}
	p.h2pool.New = func() any { return new(h2State) }
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
		t.Begin()
		x.attempts++
		stale, err := p.try(ctx, x, t)
		if err == nil {
			x.target = t
			return nil
		}
		if ctx.Err() != nil {
			// The client reset its stream: the failure is its own doing,
			// not the target's, and nobody waits for another try.
			t.End(false)
			return errClientGone
		}
		lastErr = err
		if !x.attemptFailed(t, err, stale) {
			return err
		}
	}
	return lastErr
}

// attemptFailed ends the accounting of a failed attempt on t, tells the
// target's passive health check when the failure says something about the
// target, and reports whether the request may be tried on another target.
// Both engines decide retries here.
func (x *exchange) attemptFailed(t *upstream.Target, err error, stale bool) (retry bool) {
	t.End(false)
	var cbe *clientBodyError
	if errors.As(err, &cbe) {
		// The client's body broke off: nothing to hold against the
		// target, and the request cannot be sent again.
		return false
	}
	if !stale {
		x.noteAttemptFailure(t, err)
	}
	var de *upstream.DialError
	isDial := errors.As(err, &de)
	if isDial && !errors.Is(err, upstream.ErrTargetClosed) {
		t.ReportFailure(err)
	} else if !isDial && !stale && !isTimeout(err) {
		// A fresh connection that failed: the target is in trouble.
		t.ReportFailure(err)
	}
	if !stale && x.ntried < len(x.tried) {
		x.tried[x.ntried] = t
		x.ntried++
	}
	if isDial {
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
	x.cur = t
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
		return uc.Reused && !x.bodySent, err
	}
	for {
		head, err := uc.R.ReadHead(x.markByte)
		if err == nil {
			err = wire.ParseResponse(head, &x.resp)
		}
		if err != nil {
			t.Discard(uc)
			x.uc = nil
			return uc.Reused && !x.gotByte, err
		}
		x.gotByte = true
		// 1xx interim responses other than 101 are dropped: 100 Continue
		// was already answered to the client by the proxy itself.
		if x.resp.Status >= 200 || x.resp.Status == 101 {
			return false, nil
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
