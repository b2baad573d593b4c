package proxy

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"

	"github.com/cutover/cutover/internal/dataplane/wire"
)

// An HTTP/2 request is forwarded as HTTP/1.1, so it must meet the rules an
// HTTP/1.1 request meets: x/net/http2 checks the HTTP/2 framing and field
// syntax, but lets through what HTTP/1.1 forbids (a space in :method or
// :path, "*" with GET, CONNECT, two Content-Length fields, a Content-Length
// of "+5", heads larger than limits.max_header_bytes). The rules are
// package wire's, applied by wire.RequestBuilder; only what has no
// HTTP/1.1 counterpart is here.

// errBodyMissing refuses a request whose Content-Length announces a body
// that the stream, ended by its HEADERS frame, does not carry: a malformed
// request (RFC 9113 8.1.1) that x/net checks only for a body it reads.
var errBodyMissing = &wire.Error{Status: 400, Reason: "the stream ended without the body its Content-Length announces"}

// h2Request makes st.req from r under the HTTP/1.1 parser's rules and
// returns the error the request is refused with, if any. st.req is filled
// in as far as the request allows either way, for the access log.
func (p *Proxy) h2Request(st *h2State, r *http.Request) error {
	req := &st.req
	st.buf = st.buf[:0]
	b := &st.build
	b.Start(req, st.bytes(r.Method), st.bytes(r.RequestURI), st.bytes(r.Host))
	for name, values := range r.Header {
		n := st.bytes(name)
		for _, v := range values {
			b.Add(n, st.bytes(v))
		}
	}
	if err := b.Finish(p.o.MaxHeaderBytes); err != nil {
		return err
	}
	// x/net gives Request.ContentLength as 0 when HEADERS ended the
	// stream, else the field's value when it has one.
	if req.ContentLength > 0 && r.ContentLength != req.ContentLength {
		return errBodyMissing
	}
	return nil
}

// h2ConnKey keys the peer of an HTTP/2 connection (a *forward.Client) in
// the connection's base context.
type h2ConnKey struct{}

// H2ConnContext returns ctx carrying the peer of an HTTP/2 connection from
// remote, which came over TLS, to every request on it: the peer is
// described once per connection, as on HTTP/1.1, rather than parsed from
// Request.RemoteAddr per stream. X-Forwarded-Proto must say how the client
// connected, and net/http sets Request.TLS only when the client's :scheme
// says https.
func (p *Proxy) H2ConnContext(ctx context.Context, remote net.Addr) context.Context {
	c := forward.NewClient(remote, true, p.o.Trusted)
	return context.WithValue(ctx, h2ConnKey{}, &c)
}

// h2Client is the peer of r's connection.
func (p *Proxy) h2Client(r *http.Request) forward.Client {
	if c, ok := r.Context().Value(h2ConnKey{}).(*forward.Client); ok {
		return *c
	}
	return forward.NewClient(remoteAddr(r.RemoteAddr), r.TLS != nil, p.o.Trusted)
}

// HTTP2Limits carry the proxy's limits to the HTTP/2 server in front of
// ServeHTTP, for what x/net/http2 reads before the handler runs.
type HTTP2Limits struct {
	// MaxHeaderBytes bounds the memory a header block takes. The proxy
	// applies limits.max_header_bytes itself, to the head counted as
	// HTTP/1.1 text, and answers 431 like any other refusal; HTTP/2
	// counts 32 bytes per field where HTTP/1.1 text has 4, so the same
	// head can count up to 8 times more here.
	MaxHeaderBytes int
	// ReadIdleTimeout and PingTimeout are timeouts.read_header for a
	// header block: x/net has no deadline on the CONTINUATION frames
	// that finish one, and while they are awaited the connection carries
	// nothing else (RFC 9113 6.10). After ReadIdleTimeout without a
	// complete frame the server sends a PING; a client in the middle of a
	// header block cannot answer it (any frame but CONTINUATION is a
	// connection error) and one that does not answer within PingTimeout
	// is hung up on. A client that is merely idle answers and stays.
	ReadIdleTimeout, PingTimeout time.Duration
}

// HTTP2Limits returns the limits of the proxy's HTTP/2 server.
func (p *Proxy) HTTP2Limits() HTTP2Limits {
	return HTTP2Limits{
		MaxHeaderBytes:  max(http.DefaultMaxHeaderBytes, 8*p.o.MaxHeaderBytes),
		ReadIdleTimeout: p.o.ReadHeaderTimeout,
		PingTimeout:     p.o.ReadHeaderTimeout,
	}
}
