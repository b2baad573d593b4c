package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/dataplane/wire"
)

// local answers the current request from the proxy itself (no upstream)
// and reports whether the connection stays open: only when the request had
// no body left unread.
func (c *clientConn) local(start time.Time, status int, body string) (keep bool) {
	keep = !c.req.Close && c.bodyConsumed() && !c.draining()
	c.writeLocal(status, body, nil, keep)
	c.x.status = status
	c.x.bytesSent = int64(len(body))
	if c.x.uc != nil {
		c.x.finish(false)
	}
	err := c.flush(start)
	c.logRequest()
	return keep && err == nil
}

// localError answers a request that could not be parsed and is followed by
// closing the connection.
func (c *clientConn) localError(start time.Time, status int, reason string) {
	writeLocalError(c.w, &c.x, &c.req, &c.client, start, status, reason)
	c.flush(start)
	c.logRequest()
}

// reasonHeadTimeout is the 408 body's reason on both engines.
const reasonHeadTimeout = "the request head did not arrive in time"

// headErrorReason says for the client why its request head was refused.
// Only the parser's own reasons are shown: the text of a socket error
// names the proxy's addresses and means nothing to the client.
func headErrorReason(err error) string {
	var we *wire.Error
	switch {
	case isTimeout(err):
		return reasonHeadTimeout
	case errors.As(err, &we):
		return we.Reason
	case errors.Is(err, wire.ErrHeadTooLarge), errors.Is(err, wire.ErrBareLF):
		return err.Error()
	}
	return "the request head could not be read"
}

// failureStatus maps a failed exchange to the client's status and a short
// body saying which failure it was. Both engines and HTTP/2 use it.
func failureStatus(err error) (int, string) {
	var de *upstream.DialError
	var we *wire.Error
	switch {
	case errors.Is(err, errNoTarget):
		return 503, "503 Service Unavailable: the active pool has no targets\n"
	case isTimeout(err):
		return 504, "504 Gateway Timeout: the target did not answer in time\n"
	case errors.As(err, &de), errors.Is(err, errAllTried):
		return 502, "502 Bad Gateway: no target could be reached\n"
	case errors.As(err, &we), errors.Is(err, wire.ErrHeadTooLarge), errors.Is(err, wire.ErrBareLF):
		return 502, "502 Bad Gateway: the target sent a malformed response\n"
	}
	return 502, "502 Bad Gateway: the connection to the target failed before a complete response\n"
}

// writeLocalError writes the answer to a request that could not be read,
// closing the connection, and sets x up to log it. Both engines use it.
func writeLocalError(w *bufio.Writer, x *exchange, req *wire.Request, client *forward.Client, start time.Time, status int, reason string) {
	body := strconv.Itoa(status) + " " + statusText(status) + ": " + reason + "\n"
	writeLocal(w, req, status, body, nil, false)
	// The exchange of a request that was never parsed holds nothing else.
	x.reset()
	x.req, x.client, x.start = req, client, start
	x.status = status
	x.bytesSent = int64(len(body))
}

func (c *clientConn) writeLocal(status int, body string, extra []string, keep bool) {
	writeLocal(c.w, &c.req, status, body, extra, keep)
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

// redirect answers with a 308 to the same host, path and query on HTTPS,
// as the seed's nginx `return 308 https://$host$request_uri` does; 308
// keeps the method and body, unlike 301.
func (c *clientConn) redirect(start time.Time) bool {
	var loc bytes.Buffer
	loc.WriteString("https://")
	host := c.req.Host
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && !bytes.HasSuffix(host, []byte("]")) {
		host = host[:i]
	}
	if len(host) == 0 {
		return c.local(start, 400, "400 Bad Request: a redirect to HTTPS needs a Host\n")
	}
	loc.Write(host)
	if port := c.info.HTTPSPort; port != "" && port != "443" {
		loc.WriteByte(':')
		loc.WriteString(port)
	}
	loc.Write(c.req.URI)
	keep := !c.req.Close && c.bodyConsumed()
	body := "308 Permanent Redirect\n"
	c.writeLocal(308, body, []string{"Location", loc.String()}, keep)
	c.x.status = 308
	err := c.flush(start)
	c.logRequest()
	return keep && err == nil
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Status " + strconv.Itoa(code)
}
