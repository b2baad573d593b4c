package proxy

import (
	"bytes"
	"errors"
	"time"

	"github.com/cutover/cutover/internal/dataplane/accesslog"
	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/dataplane/wire"
)

// The request life cycle, the same on every engine:
//
//   - begin routes the request (Host → service) and acquires the pool that
//     serves it, counting the request in the pool's in-flight total;
//   - the engine tries targets (roundTrip, or the event loops' own attempt)
//     and relays the response, noting what happened on the exchange;
//   - end, called exactly once per request whatever happened, makes the
//     Outcome, ends the pool's and target's accounting, hands the Outcome
//     to every observer and writes the access log line.
//
// Observers (metrics, the guard of a deploy) hang off end and nowhere else,
// so a request counts once, on every engine, whether the access log is on
// or not.

// Failure says where an exchange went wrong.
type Failure uint8

// The failures of an exchange. The proxy's own answers that are not
// failures (404 for an unknown host, a redirect) are FailNone.
const (
	FailNone         Failure = iota
	FailNoPool               // the service has no active pool (503)
	FailNoTarget             // the pool has no targets (503)
	FailConnect              // no target could be connected (502)
	FailUpstream             // the target failed before a complete response head (502)
	FailTimeout              // the target did not answer or stalled past its timeout (504)
	FailUpstreamBody         // the target failed after its response head: the body was cut
	FailClientGone           // the client closed the connection or reset the stream
	FailClientBody           // the client's request body could not be read (400)
)

var failureNames = [...]string{
	FailNone:         "",
	FailNoPool:       "no_pool",
	FailNoTarget:     "no_target",
	FailConnect:      "connect",
	FailUpstream:     "upstream",
	FailTimeout:      "timeout",
	FailUpstreamBody: "upstream_body",
	FailClientGone:   "client_gone",
	FailClientBody:   "client_body",
}

// String is the failure's name as metrics and logs show it; "" for none.
func (f Failure) String() string {
	if int(f) < len(failureNames) {
		return failureNames[f]
	}
	return "unknown"
}

// Upstream reports whether the failure is the pool's or target's doing,
// the kind a guard counts against a version. A client that went away or
// sent a broken body says nothing about the version that served it.
func (f Failure) Upstream() bool {
	switch f {
	case FailNoPool, FailNoTarget, FailConnect, FailUpstream, FailTimeout, FailUpstreamBody:
		return true
	}
	return false
}

// StatusClientClosed is the status recorded for a request whose client went
// away before the response head was sent to it, as nginx logs it.
const StatusClientClosed = 499

// AttemptFailure is one failed try of a request on a target.
type AttemptFailure struct {
	Target *upstream.Target
	Reason Failure
}

// Outcome is the record of one finished request. It is made by end and is
// valid only during the Observe call: observers copy what they keep.
type Outcome struct {
	Service *route.Service   // nil when no service matched the host
	Pool    *upstream.Pool   // the pool the request was dispatched to; nil when none
	Target  *upstream.Target // the target whose response was relayed; nil when none

	Start    time.Time
	Duration time.Duration
	Proto    string // "HTTP/1.1", "HTTP/1.0" or "HTTP/2.0"

	// Status is what the client was sent, or StatusClientClosed. Local is
	// true when the proxy answered itself rather than relaying a target's
	// response (404, 503, 502, 504, 408, 431, 308, ...).
	Status         int
	Local          bool
	UpstreamStatus int // the target's status; 0 when no target answered

	BytesIn  int64 // request body bytes forwarded to the target
	BytesOut int64 // response body bytes sent to the client

	// Attempts is the number of targets tried; Retries = Attempts-1 when
	// more than one was. Failed lists the tries that failed and why.
	Attempts int
	Failed   []AttemptFailure
	Failure  Failure
}

// Observer is told of every finished request. Observe runs on the
// request's own goroutine or event loop: it must be quick, must not block,
// and must not keep o.
type Observer interface {
	Observe(o *Outcome)
}

// exchange is one request's trip through the proxy. The HTTP/1.1 engine
// keeps one per client connection and reuses it for every request.
type exchange struct {
	req    *wire.Request
	client *forward.Client
	body   bodySource // request body; nil when none
	// reqFraming and reqLength are the request body's framing upstream.
	reqFraming wire.Framing
	reqLength  int64

	svc    *route.Service
	pool   *upstream.Pool
	target *upstream.Target
	// cur is the target of the attempt under way, begun at tryStart;
	// tryArmed says its wait is bounded by TryTimeout.
	cur      *upstream.Target
	tryStart time.Time
	tryArmed bool
	uc       *upstream.Conn
	resp     wire.Response
	rbody    wire.Body

	tried    [maxAttempts]*upstream.Target
	ntried   int
	attempts int
	failed   [maxAttempts]AttemptFailure
	nfailed  int
	bodySent bool // some of the request body was consumed
	gotByte  bool // some of a response arrived

	// held is the goodbye of a long-lived exchange (an upgraded WebSocket,
	// an event stream), registered on the target until end; waker is it
	// when goroutines blocked in reads relay the exchange, and stream the
	// event stream they relay (goodbye.go).
	held   upstream.Goodbyer
	waker  *byeWaker
	stream *streamBye

	// Incoming forwarding headers and IDs, found once per request.
	inXFF, inProto, inHost, reqID, referer, agent []byte
	scratch                                       []byte
	idBuf                                         [32]byte

	start     time.Time
	proto     string
	status    int
	local     bool
	failure   Failure
	bytesIn   int64
	bytesSent int64
	ended     bool

	// setCookie is the Set-Cookie value the response carries (nil: none);
	// it points into cookieBuf, which outlives reset.
	setCookie []byte
	cookieBuf []byte

	out Outcome
	log accesslog.Entry
}

func (x *exchange) reset() {
	scratch := x.scratch[:0]
	cookieBuf := x.cookieBuf[:0]
	resp := x.resp
	*x = exchange{}
	x.scratch = scratch
	x.cookieBuf = cookieBuf
	x.resp.Headers = resp.Headers[:0]
}

// markByte records that response bytes arrived; a method value of it is
// the head reader's callback.
func (x *exchange) markByte() { x.gotByte = true }

// bodySource yields a request body in pieces; *wire.Body is one.
type bodySource interface {
	Next(max int) ([]byte, error)
	Done() bool
}

// scanHeaders finds the incoming headers the proxy reads, in one pass, and
// gives the request an ID when it came without one.
func (x *exchange) scanHeaders(ids *forward.IDs) {
	for i := range x.req.Headers {
		h := &x.req.Headers[i]
		switch h.Kind {
		case wire.KindXForwardedFor:
			if x.inXFF == nil {
				x.inXFF = h.Value
			} else {
				// Several X-Forwarded-For fields are one list (RFC 9110 5.3).
				joined := append(append(append([]byte(nil), x.inXFF...), ", "...), h.Value...)
				x.inXFF = joined
			}
		case wire.KindXForwardedProto:
			x.inProto = h.Value
		case wire.KindXForwardedHost:
			x.inHost = h.Value
		case wire.KindXRequestID:
			if validRequestID(h.Value) {
				x.reqID = h.Value
			}
		case wire.KindReferer:
			x.referer = h.Value
		case wire.KindUserAgent:
			x.agent = h.Value
		}
	}
	if x.reqID == nil {
		x.reqID = ids.Append(x.idBuf[:0])
	}
}

// validRequestID accepts IDs that are safe to log and pass on.
func validRequestID(v []byte) bool {
	if len(v) == 0 || len(v) > 128 {
		return false
	}
	for _, c := range v {
		if c <= ' ' || c >= 0x7f || c == '"' {
			return false
		}
	}
	return true
}

// start readies x for a parsed request: the first step of every engine.
func (p *Proxy) startExchange(x *exchange, req *wire.Request, client *forward.Client, start time.Time, proto string) {
	x.reset()
	x.req = req
	x.client = client
	x.start = start
	x.proto = proto
	x.scanHeaders(p.ids)
}

// begin routes the request and acquires the pool that serves it. When it
// cannot, it returns the status and body the proxy answers with, and the
// exchange records why; the engine writes that answer and calls end.
func (p *Proxy) begin(x *exchange) (status int, body string) {
	svc := p.o.Router.Table().Lookup(x.req.Host)
	if svc == nil {
		return 404, "no service for this host\n"
	}
	x.svc = svc
	sp, needKey := svc.AcquireSplit(nil)
	if needKey {
		// A canary split: only now is the request's key worth finding.
		k := x.splitKey(svc.Name(), p.o.Trusted)
		sp, _ = svc.AcquireSplit(&k)
	}
	if sp.Pool == nil {
		x.failure = FailNoPool
		return 503, "service has no active pool\n"
	}
	x.pool = sp.Pool
	if sp.SetCookie {
		x.stickTo(svc.Name(), sp.Pool.Name())
	}
	return 0, ""
}

// splitKey finds what a canary split reads of the request: the value of
// its cutover_<service> cookie and its real client address.
func (x *exchange) splitKey(service string, trusted *forward.Trusted) route.SplitKey {
	x.cookieBuf = append(append(x.cookieBuf[:0], route.CookiePrefix...), service...)
	name := x.cookieBuf
	var k route.SplitKey
	for i := range x.req.Headers {
		h := &x.req.Headers[i]
		if len(h.Name) == len("cookie") && bytes.EqualFold(h.Name, []byte("cookie")) {
			if v := route.CookieValue(h.Value, name); v != nil {
				k.Cookie = v
				break
			}
		}
	}
	k.Client = x.client.RealIP(x.inXFF, trusted)
	if k.Client == nil {
		k.Client = []byte(x.client.IP)
	}
	return k
}

// stickTo makes the response tell the client, by a cookie, which pool of a
// canary split it was given, so its next requests stay there.
func (x *exchange) stickTo(service, pool string) {
	b := append(x.cookieBuf[:0], route.CookiePrefix...)
	b = append(append(append(b, service...), '='), pool...)
	x.cookieBuf = append(b, "; Path=/; HttpOnly; SameSite=Lax"...)
	x.setCookie = x.cookieBuf
}

// answered records the status of a response the proxy relays from the
// target.
func (x *exchange) answered(status int) {
	x.status = status
	x.local = false
}

// answeredLocally records an answer of the proxy's own.
func (x *exchange) answeredLocally(status int, bodyLen int) {
	x.status = status
	x.local = true
	x.bytesSent = int64(bodyLen)
}

// fail records why the exchange failed, keeping the first reason: a
// client that leaves after the target failed does not hide the failure.
func (x *exchange) fail(f Failure) {
	if x.failure == FailNone {
		x.failure = f
	}
}

// clientGone records that the client went away. Before any response was
// written to it, the request is recorded as StatusClientClosed.
func (x *exchange) clientGone() {
	x.fail(FailClientGone)
	if x.status == 0 {
		x.status = StatusClientClosed
		x.local = true
	}
}

// noteAttemptFailure records a failed try on t.
func (x *exchange) noteAttemptFailure(t *upstream.Target, err error) {
	if x.nfailed < len(x.failed) {
		x.failed[x.nfailed] = AttemptFailure{Target: t, Reason: failureOf(err)}
		x.nfailed++
	}
}

// end finishes the exchange: the last step of every engine, called exactly
// once per request (a second call does nothing). The upstream connection
// must already be returned or closed (finish).
func (p *Proxy) end(x *exchange) {
	if x.ended {
		return
	}
	x.ended = true
	if x.target != nil {
		x.releaseLongLived()
		x.target.End(true)
	}
	if x.pool != nil {
		x.pool.End()
	}
	o := &x.out
	*o = Outcome{
		Service:  x.svc,
		Pool:     x.pool,
		Target:   x.target,
		Start:    x.start,
		Duration: time.Since(x.start),
		Proto:    x.proto,
		Status:   x.status,
		Local:    x.local,
		BytesIn:  x.bytesIn,
		BytesOut: x.bytesSent,
		Attempts: x.attempts,
		Failed:   x.failed[:x.nfailed],
		Failure:  x.failure,
	}
	if x.target != nil {
		o.UpstreamStatus = x.resp.Status
	}
	for _, ob := range p.o.Observers {
		ob.Observe(o)
	}
	p.logExchange(x)
}

// failureOf classifies the error that ended an attempt or an exchange.
func failureOf(err error) Failure {
	var de *upstream.DialError
	var cbe *clientBodyError
	switch {
	case err == nil:
		return FailNone
	case errors.Is(err, errClientGone):
		return FailClientGone
	case errors.As(err, &cbe):
		return FailClientBody
	case errors.Is(err, errNoTarget):
		return FailNoTarget
	case isTimeout(err), err == errTryTimeout:
		return FailTimeout
	case errors.As(err, &de), errors.Is(err, errAllTried):
		return FailConnect
	}
	return FailUpstream
}

// logExchange writes the access log entry of a finished exchange into the
// exchange's own entry, so that logging allocates nothing.
func (p *Proxy) logExchange(x *exchange) {
	l := p.o.AccessLog
	if l == nil {
		return
	}
	e := &x.log
	*e = accesslog.Entry{
		Start:      x.start,
		RemoteAddr: x.client.IP,
		Method:     x.req.Method,
		URI:        x.req.URI,
		Proto:      x.proto,
		Host:       x.req.Host,
		Referer:    x.referer,
		UserAgent:  x.agent,
		RequestID:  x.reqID,
		Status:     x.status,
		BytesSent:  x.bytesSent,
		Duration:   x.out.Duration,
	}
	if ip := x.client.RealIP(x.inXFF, p.o.Trusted); ip != nil {
		e.RemoteAddr = string(ip)
	}
	if x.svc != nil {
		e.Service = x.svc.Name()
	}
	if x.pool != nil {
		e.Pool = x.pool.Name()
	}
	if x.target != nil {
		e.Target = x.target.Addr()
		e.UpstreamStatus = x.resp.Status
	}
	l.Log(e)
}

// finish returns the upstream connection for reuse or closes it.
func (x *exchange) finish(reusable bool) {
	if x.waker != nil && x.waker.end() {
		// The goodbye moved the connection's read deadline.
		reusable = false
	}
	if x.uc != nil {
		t := x.uc.Target()
		if reusable {
			t.Put(x.uc)
		} else {
			t.Discard(x.uc)
		}
		x.uc = nil
	}
}
