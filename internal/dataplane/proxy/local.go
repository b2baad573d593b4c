package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
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
