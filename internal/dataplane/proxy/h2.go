package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/dataplane/wire"
)

// h2State is the per-request state of the HTTP/2 front end, pooled.
type h2State struct {
	req    wire.Request
	build  wire.RequestBuilder
	x      exchange
	client forward.Client
	body   readerBody
	buf    []byte
}

// ServeHTTP forwards a request that arrived over HTTP/2. It shares
// routing, balancing, pool accounting, retries, forwarding headers, the
// upstream connections and the access log with the HTTP/1.1 engine; only
// reading the request and writing the response go through net/http.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := p.h2pool.Get().(*h2State)
	defer p.h2pool.Put(st)

	req := &st.req
	refused := p.h2Request(st, r)
	st.client = forward.NewClient(remoteAddr(r.RemoteAddr), cameOverTLS(r), p.o.Trusted)

	x := &st.x
	p.startExchange(x, req, &st.client, start, r.Proto)
	// end runs on every way out, the handler's abort panic included.
	defer p.end(x)
	if refused != nil {
		status := wire.StatusFor(refused)
		p.h2Local(w, x, status, localErrorBody(status, headErrorReason(refused)))
		return
	}
	rc := http.NewResponseController(w)
	switch {
	case req.ContentLength > 0:
		x.reqFraming, x.reqLength = wire.FrameLength, req.ContentLength
	case req.ContentLength < 0 && r.ContentLength < 0:
		// The stream is open and no length was given: the body's end is
		// the stream's.
		x.reqFraming = wire.FrameChunked
		req.Chunked = true
	}
	if x.reqFraming != wire.FrameNone {
		st.body.reset(r.Body, rc, p.o.ReadTimeout)
		x.body = &st.body
	}

	if status, body := p.begin(x); status != 0 {
		p.h2Local(w, x, status, body)
		return
	}
	if err := p.roundTrip(r.Context(), x); err != nil {
		if r.Context().Err() != nil {
			// The client reset the stream: nobody is left to answer.
			x.clientGone()
			return
		}
		x.fail(failureOf(err))
		var cbe *clientBodyError
		if errors.As(err, &cbe) {
			code, msg := clientBodyStatus(err)
			p.h2Local(w, x, code, msg)
			return
		}
		code, msg := failureStatus(err)
		p.h2Local(w, x, code, msg)
		return
	}
	uc := x.uc
	// A client that resets its stream ends the upstream exchange too.
	stop := context.AfterFunc(r.Context(), func() { uc.Conn.Close() })
	defer stop()

	resp := &x.resp
	if resp.Status == 101 {
		x.finish(false)
		x.fail(FailUpstream)
		p.h2Local(w, x, 502, "502 Bad Gateway: protocol upgrades need HTTP/1.1\n")
		return
	}
	h := w.Header()
	for i := range resp.Headers {
		f := &resp.Headers[i]
		if f.Kind.HopByHop() || resp.Listed(f.Name) {
			continue
		}
		if f.Kind == wire.KindContentLength && !resp.BodyAllowed(req.IsHead()) && !req.IsHead() {
			continue
		}
		h.Add(string(f.Name), string(f.Value))
	}
	if x.setCookie != nil {
		h.Add("Set-Cookie", string(x.setCookie))
	}
	w.WriteHeader(resp.Status)
	x.answered(resp.Status)

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
	// An event stream ends cleanly at a drain's goodbye with END_STREAM,
	// unless the target announced its length (forwarded above).
	x.holdEventStream(in == wire.FrameChunked || in == wire.FrameClose)
	var clientErr error
	for !x.rbody.Done() {
		if !x.rbody.Buffered() {
			if clientErr = rc.Flush(); clientErr != nil {
				break
			}
		}
		b, end, err := p.nextBody(x)
		if end || err == io.EOF {
			break
		}
		if err != nil {
			x.finish(false)
			if r.Context().Err() != nil {
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
			panic(http.ErrAbortHandler)
		}
		n, werr := w.Write(b)
		x.bytesSent += int64(n)
		if werr != nil {
			clientErr = werr
			break
		}
	}
	if clientErr != nil {
		x.clientGone()
	}
	x.finish(clientErr == nil && x.rbody.Done() && in != wire.FrameClose && !resp.Close)
}

func (p *Proxy) h2Local(w http.ResponseWriter, x *exchange, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	io.WriteString(w, body)
	x.answeredLocally(code, len(body))
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

func remoteAddr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		return &net.TCPAddr{}
	}
	return a
}

// readerBody adapts a net/http request body to bodySource, with
// timeouts.read between two reads: the stream's read deadline, which
// x/net/http2 enforces by failing the read.
type readerBody struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
	dl      upstream.Deadline
	buf     []byte
	done    bool
}

func (b *readerBody) reset(r io.Reader, rc *http.ResponseController, timeout time.Duration) {
	b.r, b.rc, b.timeout = r, rc, timeout
	b.dl = upstream.Deadline{}
	b.done = false
	if b.buf == nil {
		b.buf = make([]byte, 32<<10)
	}
}

func (b *readerBody) Done() bool { return b.done }

func (b *readerBody) Next(max int) ([]byte, error) {
	if b.done {
		return nil, io.EOF
	}
	b.dl.Extend(time.Now(), b.timeout, b.rc.SetReadDeadline)
	n, err := b.r.Read(b.buf[:min(max, len(b.buf))])
	if err == io.EOF {
		b.done = true
		if n > 0 {
			return b.buf[:n], nil
		}
		return nil, io.EOF
	}
	return b.buf[:n], err
}
