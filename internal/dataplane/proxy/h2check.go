package proxy

import (
	"net/http"

	"github.com/cutover/cutover/internal/dataplane/h2"
	"github.com/cutover/cutover/internal/dataplane/wire"
)

// An HTTP/2 request is forwarded as HTTP/1.1, so it must meet the rules an
// HTTP/1.1 request meets: the h2 engine checks the HTTP/2 framing and field
// syntax, but lets through what HTTP/1.1 forbids (a space in :method or
// :path, "*" with GET, CONNECT, two Content-Length fields, a Content-Length
// of "+5", heads larger than limits.max_header_bytes). The rules are
// package wire's, applied by wire.RequestBuilder; only what has no
// HTTP/1.1 counterpart is here.

// errBodyMissing refuses a request whose Content-Length announces a body
// that the stream, ended by its HEADERS frame, does not carry: a malformed
// request (RFC 9113 8.1.1) that the engine checks only for a body it reads.
var errBodyMissing = &wire.Error{Status: 400, Reason: "the stream ended without the body its Content-Length announces"}

// h2Request makes st.req from s under the HTTP/1.1 parser's rules and
// returns the error the request is refused with, if any. st.req is filled
// in as far as the request allows either way, for the access log.
func (p *Proxy) h2Request(st *h2State, s *h2.Stream) error {
	req := &st.req
	st.buf = st.buf[:0]
	b := &st.build
	var host []byte
	if s.Authority != "" {
		host = st.bytes(s.Authority)
	}
	// Without :authority the host field names the host (RFC 9113 §8.3.1),
	// which the builder takes from the fields.
	target := s.Path
	if s.Method == "CONNECT" {
		// Its target is the authority (RFC 9113 §8.5), as in HTTP/1.1's
		// authority form, which the HTTP/1.1 rules refuse with 405.
		target = s.Authority
	}
	b.Start(req, st.bytes(s.Method), st.bytes(target), host)
	st.cookies = st.cookies[:0]
	for _, f := range s.Fields {
		if f.Name == "cookie" {
			st.cookies = append(st.cookies, f.Value)
			continue
		}
		b.Add(st.bytes(f.Name), st.bytes(f.Value))
	}
	if len(st.cookies) > 0 {
		b.Add(st.bytes("cookie"), st.join(st.cookies, "; "))
	}
	if s.Truncated {
		b.Finish(p.o.MaxHeaderBytes)
		return wire.ErrHeadTooLarge
	}
	if err := b.Finish(p.o.MaxHeaderBytes); err != nil {
		return err
	}
	if req.ContentLength > 0 && !s.HasBody {
		return errBodyMissing
	}
	return nil
}

// join copies parts, sep between them, into the state's arena.
func (st *h2State) join(parts []string, sep string) []byte {
	n := len(sep) * (len(parts) - 1)
	for _, s := range parts {
		n += len(s)
	}
	if cap(st.buf)-len(st.buf) < n {
		st.buf = make([]byte, 0, max(4096, n))
	}
	at := len(st.buf)
	for i, s := range parts {
		if i > 0 {
			st.buf = append(st.buf, sep...)
		}
		st.buf = append(st.buf, s...)
	}
	return st.buf[at:len(st.buf):len(st.buf)]
}

// HTTP2Options returns the options of the HTTP/2 engine in front of the
// proxy: the proxy's own limits and timeouts, for what the engine reads
// before a stream's handler runs.
//
// MaxHeaderListSize bounds the memory a header block takes. The proxy
// applies limits.max_header_bytes itself, to the head counted as HTTP/1.1
// text, and answers 431 like any other refusal; HTTP/2 counts 32 bytes per
// field where HTTP/1.1 text has 4, so the same head can count up to 8
// times more there.
//
// ReadIdleTimeout and PingTimeout are timeouts.read_header for a header
// block: while one is awaited the connection carries nothing else (RFC
// 9113 §6.10), and a client in the middle of one cannot answer the PING
// sent after ReadIdleTimeout without a frame, so it is hung up on after
// PingTimeout; a client that is merely idle answers and stays.
func (p *Proxy) HTTP2Options() h2.Options {
	return h2.Options{
		MaxHeaderListSize: uint32(max(http.DefaultMaxHeaderBytes, 8*p.o.MaxHeaderBytes)),
		ReadIdleTimeout:   p.o.ReadHeaderTimeout,
		PingTimeout:       p.o.ReadHeaderTimeout,
		PrefaceTimeout:    p.o.ReadHeaderTimeout,
		IdleTimeout:       p.o.IdleTimeout,
		WriteTimeout:      p.o.WriteTimeout,
		Logger:            p.o.Logger,
	}
}
