package proxy

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/cutover/cutover/internal/dataplane/wire"
)

// upgrade relays a 101 Switching Protocols response and then turns the
// client and upstream connections into a two-way byte pipe (WebSockets).
// The pool keeps counting the request until the pipe ends, so a deploy
// drains it like any other request. A WebSocket is long-lived on its
// target: near the drain's end it is told goodbye and closes with a close
// frame to each side (wsRelay). Other protocols, whose framing the relay
// does not know, end when the drain's time is up and the upstream
// connection is closed.
func (c *clientConn) upgrade(start time.Time) bool {
	x := &c.x
	w := c.w
	w.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	for i := range x.resp.Headers {
		h := &x.resp.Headers[i]
		if h.Kind == wire.KindUpgrade {
			w.WriteString("Connection: Upgrade\r\nUpgrade: ")
			w.Write(h.Value)
			w.WriteString("\r\n")
			continue
		}
		if h.Kind.HopByHop() || x.resp.Listed(h.Name) {
			continue
		}
		w.Write(h.Name)
		w.WriteString(": ")
		w.Write(h.Value)
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	x.answered(101)
	if err := c.flush(start); err != nil {
		x.finish(false)
		x.clientGone()
		c.p.end(x)
		return false
	}
	uc := x.uc
	// Upgraded connections are long-lived by nature; no timeouts apply.
	c.rdl.Clear(c.nc.SetReadDeadline)
	c.wdl.Clear(c.nc.SetWriteDeadline)
	uc.ReadDL.Clear(uc.SetReadDeadline)
	uc.WriteDL.Clear(uc.SetWriteDeadline)

	if isWebSocket(&x.resp) {
		return c.relayWebSocket()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pipe(uc.Conn, c.r)
		// The client is done sending: close both so the other direction
		// ends too.
		uc.Conn.Close()
		c.nc.Close()
	}()
	n := pipe(c.nc, uc.R)
	uc.Conn.Close()
	c.nc.Close()
	wg.Wait()
	x.bytesSent = n
	x.finish(false)
	c.p.end(x)
	return false
}

// pipe copies from r to dst until either fails, without a buffer of its
// own: r's buffer is the copy buffer.
func pipe(dst net.Conn, r *wire.Reader) (n int64) {
	for {
		b, err := r.Next(32 << 10)
		if len(b) > 0 {
			m, werr := dst.Write(b)
			n += int64(m)
			if werr != nil {
				return n
			}
		}
		if err != nil {
			if err != io.EOF {
				return n
			}
			return n
		}
	}
}

// relayWebSocket relays an upgraded WebSocket connection frame-aware in
// both directions until it ends, or until a drain's goodbye has closed it
// cleanly (wsRelay).
func (c *clientConn) relayWebSocket() bool {
	x := &c.x
	uc := x.uc
	bye := &byeWaker{conns: [2]net.Conn{uc.Conn, c.nc}}
	x.waker = bye
	x.holdLongLived(bye)
	closeBoth := func() {
		uc.Conn.Close()
		c.nc.Close()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, clean := wsRelay(uc.Conn, c.r, c.nc, bye, true); !clean {
			closeBoth()
		}
	}()
	n, clean := wsRelay(c.nc, uc.R, uc.Conn, bye, false)
	if !clean {
		closeBoth()
	}
	wg.Wait()
	closeBoth()
	x.bytesSent = n
	x.finish(false)
	c.p.end(x)
	return false
}
