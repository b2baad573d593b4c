package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
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
	rw     h2Writer
	buf    []byte
	// hdr gathers a response's field names and values, to make one string
	// of them all (see h2Header).
	hdr []byte
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
	st.client = p.h2Client(r)

	x := &st.x
	p.startExchange(x, req, &st.client, start, r.Proto)
	// end runs on every way out, the handler's abort panic included.
	defer p.end(x)
	if refused != nil {
		status := wire.StatusFor(refused)
		p.h2Local(w, x, status, localErrorBody(status, headErrorReason(refused)))
		return
	}
	st.rw = h2Writer{w}
	rc := &st.rw
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
		p.h2Local(w, x, 502, "502 Bad Gateway: protocol upgrades need HTTP/1.1\n")
		return
	}
	st.h2Header(w.Header(), x, req.IsHead())
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
			if stop == nil {
				stop = context.AfterFunc(r.Context(), func() { uc.Conn.Close() })
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

// h2Header adds to h the fields of x's response that are forwarded. The
// names and values are copied into one string, sliced per field, and the
// value slices share one array: two allocations per response rather than
// three per field (x/net copies the map again when the head is written).
func (st *h2State) h2Header(h http.Header, x *exchange, head bool) {
	resp := &x.resp
	keep := func(f *wire.Header) bool {
		if f.Kind.HopByHop() || resp.Listed(f.Name) {
			return false
		}
		return f.Kind != wire.KindContentLength || resp.BodyAllowed(head) || head
	}
	b, n := st.hdr[:0], 0
	for i := range resp.Headers {
		if f := &resp.Headers[i]; keep(f) {
			b = append(append(b, f.Name...), f.Value...)
			n++
		}
	}
	const setCookie = "Set-Cookie"
	if x.setCookie != nil {
		b = append(b, x.setCookie...)
		n++
	}
	st.hdr = b
	all := string(b)
	vals := make([]string, n)
	add := func(name, value string) {
		k := textproto.CanonicalMIMEHeaderKey(name)
		if old := h[k]; old != nil {
			h[k] = append(old, value)
			return
		}
		vals[0] = value
		h[k] = vals[:1:1]
		vals = vals[1:]
	}
	at := 0
	for i := range resp.Headers {
		if f := &resp.Headers[i]; keep(f) {
			name := all[at : at+len(f.Name)]
			at += len(f.Name)
			add(name, all[at:at+len(f.Value)])
			at += len(f.Value)
		}
	}
	if x.setCookie != nil {
		add(setCookie, all[at:])
	}
}

// h2Writer reaches the stream's flush and read deadline through the
// methods x/net's ResponseWriter has, without the http.ResponseController
// that would be allocated per request for them.
type h2Writer struct{ w http.ResponseWriter }

func (hw *h2Writer) Flush() error {
	if f, ok := hw.w.(interface{ FlushError() error }); ok {
		return f.FlushError()
	}
	return http.NewResponseController(hw.w).Flush()
}

func (hw *h2Writer) SetReadDeadline(t time.Time) error {
	if d, ok := hw.w.(interface{ SetReadDeadline(time.Time) error }); ok {
		return d.SetReadDeadline(t)
	}
	return http.NewResponseController(hw.w).SetReadDeadline(t)
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
	rc      *h2Writer
	timeout time.Duration
	dl      upstream.Deadline
	buf     []byte
	done    bool
}

func (b *readerBody) reset(r io.Reader, rc *h2Writer, timeout time.Duration) {
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
