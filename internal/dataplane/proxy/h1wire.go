package proxy

// The HTTP/1.1 serializer that both HTTP/1.1 engines (the event loops and
// the goroutine engine) and the upstream side of HTTP/2 requests write
// with: request heads to targets, response heads to clients, and the
// proxy's own short answers.

import (
	"bufio"
	"net/http"
	"strconv"

	"github.com/cutover/cutover/internal/dataplane/wire"
)

// responseFraming decides how a response body is read from the target (in)
// and framed to the client (out), and whether the client connection stays
// open; keep is whether it would otherwise.
func responseFraming(req *wire.Request, resp *wire.Response, keep, draining bool) (in, out wire.Framing, keepOpen bool) {
	switch {
	case !resp.BodyAllowed(req.IsHead()):
	case resp.Chunked:
		in, out = wire.FrameChunked, wire.FrameChunked
	case resp.ContentLength >= 0:
		in, out = wire.FrameLength, wire.FrameLength
	default:
		in, out = wire.FrameClose, wire.FrameChunked
	}
	if out == wire.FrameChunked && req.Minor == 0 {
		// HTTP/1.0 has no chunked coding: end the body by closing.
		out = wire.FrameClose
		keep = false
	}
	if draining {
		keep = false
	}
	return in, out, keep
}

// writeResponseHead writes the head sent to the client: the target's status
// and fields minus hop-by-hop ones, with the body framing out.
// setCookie, when not nil, is a Set-Cookie value of the proxy's own (a
// canary split's sticky cookie).
func writeResponseHead(w *bufio.Writer, resp *wire.Response, out wire.Framing, keep bool, minor int, setCookie []byte) {
	w.WriteString("HTTP/1.1 ")
	writeStatus(w, resp.Status, resp.Reason)
	for i := range resp.Headers {
		h := &resp.Headers[i]
		if h.Kind.HopByHop() || resp.Listed(h.Name) {
			continue
		}
		if h.Kind == wire.KindContentLength && out != wire.FrameNone {
			continue // written below with the framing
		}
		w.Write(h.Name)
		w.WriteString(": ")
		w.Write(h.Value)
		w.WriteString("\r\n")
	}
	if setCookie != nil {
		w.WriteString("Set-Cookie: ")
		w.Write(setCookie)
		w.WriteString("\r\n")
	}
	switch out {
	case wire.FrameLength:
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), resp.ContentLength, 10))
		w.WriteString("\r\n")
	case wire.FrameChunked:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if !keep {
		w.WriteString("Connection: close\r\n\r\n")
	} else if minor == 0 {
		w.WriteString("Connection: keep-alive\r\n\r\n")
	} else {
		w.WriteString("\r\n")
	}
}

// writeStatus writes "CODE REASON\r\n".
func writeStatus(w *bufio.Writer, code int, reason []byte) {
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(code), 10))
	w.WriteByte(' ')
	if len(reason) > 0 {
		w.Write(reason)
	} else {
		w.WriteString(statusText(code))
	}
	w.WriteString("\r\n")
}

func protoName(minor int) string {
	if minor == 0 {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

// writeRequestHead writes the head sent upstream: the client's request
// line and fields, minus hop-by-hop fields, plus the forwarding fields and
// the body framing.
func (p *Proxy) writeRequestHead(w *bufio.Writer, x *exchange) {
	r := x.req
	w.Write(r.Method)
	w.WriteByte(' ')
	w.Write(r.URI)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	host := r.Host
	if len(host) == 0 {
		host = []byte(x.cur.Addr())
	}
	w.Write(host)
	w.WriteString("\r\n")
	for i := range r.Headers {
		h := &r.Headers[i]
		switch h.Kind {
		case wire.KindHost, wire.KindContentLength, wire.KindExpect,
			wire.KindXForwardedFor, wire.KindXRealIP, wire.KindXForwardedProto,
			wire.KindXForwardedHost, wire.KindXRequestID, wire.KindUnderscored:
			continue
		case wire.KindUpgrade:
			if r.Upgrade {
				w.WriteString("Connection: Upgrade\r\nUpgrade: ")
				w.Write(h.Value)
				w.WriteString("\r\n")
			}
			continue
		}
		if h.Kind.HopByHop() || r.Listed(h.Name) {
			continue
		}
		w.Write(h.Name)
		w.WriteString(": ")
		w.Write(h.Value)
		w.WriteString("\r\n")
	}
	cl := x.client
	x.scratch = cl.AppendXFF(x.scratch[:0], x.inXFF)
	w.WriteString("X-Forwarded-For: ")
	w.Write(x.scratch)
	w.WriteString("\r\nX-Real-IP: ")
	if ip := cl.RealIP(x.inXFF, p.o.Trusted); ip != nil {
		w.Write(ip)
	} else {
		w.WriteString(cl.IP)
	}
	w.WriteString("\r\nX-Forwarded-Proto: ")
	if cl.Trusted && len(x.inProto) > 0 {
		w.Write(x.inProto)
	} else {
		w.WriteString(cl.Proto())
	}
	w.WriteString("\r\nX-Forwarded-Host: ")
	if cl.Trusted && len(x.inHost) > 0 {
		w.Write(x.inHost)
	} else {
		w.Write(host)
	}
	w.WriteString("\r\nX-Request-Id: ")
	w.Write(x.reqID)
	w.WriteString("\r\n")
	switch x.reqFraming {
	case wire.FrameLength:
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), x.reqLength, 10))
		w.WriteString("\r\n")
	case wire.FrameChunked:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	w.WriteString("\r\n")
}

// writeLocal writes a response of the proxy's own: a short text body.
func writeLocal(w *bufio.Writer, req *wire.Request, status int, body string, extra []string, keep bool) {
	w.WriteString("HTTP/1.1 ")
	writeStatus(w, status, nil)
	w.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	w.WriteString("\r\n")
	for i := 0; i+1 < len(extra); i += 2 {
		w.WriteString(extra[i])
		w.WriteString(": ")
		w.WriteString(extra[i+1])
		w.WriteString("\r\n")
	}
	if !keep {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	if !req.IsHead() {
		w.WriteString(body)
	}
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Status " + strconv.Itoa(code)
}
