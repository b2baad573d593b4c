package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/h2"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/dataplane/wire"
)

// h2State is the per-request state of the HTTP/2 front end, pooled.
type h2State struct {
	req    wire.Request
	build  wire.RequestBuilder
	x      exchange
	client forward.Client
	body   streamBody
	buf    []byte
	// hdr gathers a response's field names and values, to make one string
	// of them all (see h2Fields); fields slices it.
	hdr    []byte
	fields []hpack.HeaderField
	// cookies gathers a request's cookie fields, which HTTP/2 may split
	// (RFC 9113 §8.2.3) and HTTP/1.1 has as one.
	cookies []string
}

// h2Conn serves the streams of one HTTP/2 connection (see HTTP2Handler).
type h2Conn struct {
	p *Proxy
	// client is the connection's peer, described once for all its
	// streams as on HTTP/1.1.
	client forward.Client
}

// HTTP2Handler returns the handler of an HTTP/2 connection from remote,
// which came over TLS.
func (p *Proxy) HTTP2Handler(remote net.Addr) h2.Handler {
	return &h2Conn{p: p, client: forward.NewClient(remote, true, p.o.Trusted)}
}

// ServeStream forwards a request that arrived over HTTP/2. It shares
// routing, balancing, pool accounting, retries, forwarding headers, the
// upstream connections and the access log with the HTTP/1.1 engine; only
// reading the request and writing the response are HTTP/2's.
func (hc *h2Conn) ServeStream(s *h2.Stream) {
	p := hc.p
	start := time.Now()
	st := p.h2pool.Get().(*h2State)
	defer p.h2pool.Put(st)

	req := &st.req
	refused := p.h2Request(st, s)
	st.client = hc.client

	x := &st.x
	p.startExchange(x, req, &st.client, start, "HTTP/2.0")
	defer p.end(x)
	if refused != nil {
		status := wire.StatusFor(refused)
		st.h2Local(s, x, status, localErrorBody(status, headErrorReason(refused)))
		return
	}
	switch {
	case req.ContentLength > 0:
		x.reqFraming, x.reqLength = wire.FrameLength, req.ContentLength
	case req.ContentLength < 0 && s.HasBody:
		// The stream is open and no length was given: the body's end is
		// the stream's.
		x.reqFraming = wire.FrameChunked
		req.Chunked = true
	}
	if x.reqFraming != wire.FrameNone {
		st.body.reset(s, p.o.ReadTimeout)
		x.body = &st.body
	}

	if status, body := p.begin(x); status != 0 {
		st.h2Local(s, x, status, body)
		return
	}
	if req.ExpectContinue && x.body != nil {
		// Answered here, as over HTTP/1.1, so the body can be streamed to
		// the target without waiting on it.
		if s.Continue() != nil {
			x.clientGone()
			return
		}
	}
	if err := p.roundTrip(s, x); err != nil {
		if s.Err() != nil {
			// The client reset the stream: nobody is left to answer.
			x.clientGone()
			return
		}
		x.fail(failureOf(err))
		var cbe *clientBodyError
		if errors.As(err, &cbe) {
			code, msg := clientBodyStatus(err)
			st.h2Local(s, x, code, msg)
			return
		}
		code, msg := failureStatus(err)
		st.h2Local(s, x, code, msg)
		return
	}
	uc := x.uc
	// A client that resets its stream ends the upstream exchange too: set
	// up before the first read that waits for the target, which a response
	// already in the buffer needs none of.
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
		}
	}()

	resp := &x.resp
	if resp.Status == 101 {
		x.finish(false)
		x.fail(FailUpstream)
		st.h2Local(s, x, 502, "502 Bad Gateway: protocol upgrades need HTTP/1.1\n")
		return
	}
	in := wire.FrameNone
	switch {
	case !resp.BodyAllowed(req.IsHead()):
	case resp.Chunked:
		in = wire.FrameChunked
	case resp.ContentLength >= 0:
		in = wire.FrameLength
	default:
		in = wire.FrameClose
	}
	x.rbody.Reset(uc.R, in, resp.ContentLength)
	clientErr := s.WriteHead(resp.Status, st.h2Fields(x, req.IsHead()), x.rbody.Done())
	x.answered(resp.Status)
	// An event stream ends cleanly at a drain's goodbye with END_STREAM,
	// unless the target announced its length (forwarded above).
	x.holdEventStream(in == wire.FrameChunked || in == wire.FrameClose)
	for clientErr == nil && !x.rbody.Done() {
		if !x.rbody.Buffered() {
			if clientErr = s.Flush(); clientErr != nil {
				break
			}
			if stop == nil {
				stop = context.AfterFunc(s, func() { uc.Conn.Close() })
			}
		}
		b, end, err := p.nextBody(x)
		if end || err == io.EOF {
			break
		}
		if err != nil {
			x.finish(false)
			if s.Err() != nil {
				// The client reset the stream, which closed the upstream
				// connection under the read.
				x.clientGone()
				return
			}
			x.fail(FailUpstreamBody)
			if isTimeout(err) {
				x.failure = FailTimeout
			}
			// Abort the stream so the client sees the body is incomplete.
			s.Abort()
			return
		}
		n, werr := s.Write(b)
		x.bytesSent += int64(n)
		clientErr = werr
	}
	if clientErr != nil {
		x.clientGone()
	}
	x.finish(clientErr == nil && x.rbody.Done() && in != wire.FrameClose && !resp.Close)
}

func (st *h2State) h2Local(s *h2.Stream, x *exchange, code int, body string) {
	st.fields = append(st.fields[:0],
		hpack.HeaderField{Name: "content-type", Value: "text/plain; charset=utf-8"},
		hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))})
	s.WriteHead(code, st.fields, len(body) == 0)
	if len(body) > 0 {
		s.Write(st.bytes(body))
	}
	x.answeredLocally(code, len(body))
}

// h2Fields returns the fields of x's response that are forwarded, names
// in lower case as HTTP/2 has them. The names and values are copied into
// one string and sliced per field: one allocation per response.
func (st *h2State) h2Fields(x *exchange, head bool) []hpack.HeaderField {
	resp := &x.resp
	keep := func(f *wire.Header) bool {
		if f.Kind.HopByHop() || resp.Listed(f.Name) {
			return false
		}
		return f.Kind != wire.KindContentLength || resp.BodyAllowed(head) || head
	}
	lower := func(b, name []byte) []byte {
		for _, c := range name {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b = append(b, c)
		}
		return b
	}
	const setCookie = "set-cookie"
	b := st.hdr[:0]
	for i := range resp.Headers {
		if f := &resp.Headers[i]; keep(f) {
			b = append(lower(b, f.Name), f.Value...)
		}
	}
	if x.setCookie != nil {
		b = append(append(b, setCookie...), x.setCookie...)
	}
	st.hdr = b
	all := string(b)
	fields := st.fields[:0]
	at := 0
	field := func(n, v int) {
		fields = append(fields, hpack.HeaderField{Name: all[at : at+n], Value: all[at+n : at+n+v]})
		at += n + v
	}
	for i := range resp.Headers {
		if f := &resp.Headers[i]; keep(f) {
			field(len(f.Name), len(f.Value))
		}
	}
	if x.setCookie != nil {
		field(len(setCookie), len(x.setCookie))
	}
	st.fields = fields
	return fields
}

// bytes copies s into the state's arena and returns the copy. The arena is
// allocated big enough up front per request so earlier slices stay valid.
func (st *h2State) bytes(s string) []byte {
	if cap(st.buf)-len(st.buf) < len(s) {
		// Start a new arena; slices into the old one stay valid.
		st.buf = make([]byte, 0, max(4096, len(s)))
	}
	n := len(st.buf)
	st.buf = append(st.buf, s...)
	return st.buf[n:len(st.buf):len(st.buf)]
}

// streamBody adapts a stream's request body to bodySource, with
// timeouts.read between two reads.
type streamBody struct {
	s       *h2.Stream
	timeout time.Duration
	dl      upstream.Deadline
	buf     []byte
	done    bool
}

func (b *streamBody) reset(s *h2.Stream, timeout time.Duration) {
	b.s, b.timeout = s, timeout
	b.dl = upstream.Deadline{}
	b.done = false
	if b.buf == nil {
		b.buf = make([]byte, 32<<10)
	}
}

func (b *streamBody) Done() bool { return b.done }

func (b *streamBody) Next(max int) ([]byte, error) {
	if b.done {
		return nil, io.EOF
	}
	b.dl.Extend(time.Now(), b.timeout, b.s.SetReadDeadline)
	n, err := b.s.Read(b.buf[:min(max, len(b.buf))])
	if err == io.EOF {
		b.done = true
		if n > 0 {
			return b.buf[:n], nil
		}
		return nil, io.EOF
	}
	return b.buf[:n], err
}
