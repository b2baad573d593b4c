package proxy

import (
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Parking an idle HTTP/1.1-over-TLS connection: its goroutine ends and the
// connection waits for its next request registered in an epoll set, holding
// crypto/tls's state and its structs but no goroutine. A goroutine parked in
// a read keeps the stack that serving requests grew it to (8 KiB: Go shrinks
// a waiting goroutine's stack only when a collection finds three quarters of
// it unused), which was a third of an idle TLS connection's memory. When
// bytes arrive, the client closes, the idle timeout passes or the server
// closes the connection, a new goroutine takes it up with a fresh stack.
//
// Only connections idle for Options.ParkAfter park: the wait for a request
// reads under that shorter deadline first (crypto/tls keeps a connection
// usable after a read timed out), so a busy connection serves every request
// on its own goroutine as before and pays nothing for this.
//
// A plain socket cannot park this way at no cost (its goroutine engine holds
// its read buffer), and needs not: plain HTTP/1.1 is served by the event
// loops, whose idle connections hold no goroutine.

// Parker is what ServeConn needs to park a connection (ConnInfo.Park): the
// connection's goroutine then ends while it stays open, so whoever owns the
// socket must be able to wake it, and learns of its end from Closed.
type Parker interface {
	// Parking is called once, before the connection first parks, with the
	// function that wakes it. Closing the connection's socket while it is
	// parked drops it from the epoll set without an event, so whoever
	// closes the socket must call wake afterwards (a no-op when it is not
	// parked): the woken connection finds it closed and ends.
	Parking(wake func())
	// Closed is called once, when the connection has been closed, from
	// whichever goroutine served it last; ServeConn may have returned
	// long before.
	Closed()
}

// defaultParkAfter is Options.ParkAfter's default: long enough that a
// client sending requests back to back never parks, short against the
// idle timeout, so a connection spends almost all of a long wait parked.
const defaultParkAfter = 2 * time.Second

// parkStats count parked connections for Proxy.Parked.
type parkStats struct {
	now   atomic.Int64
	total atomic.Uint64
}

// Parked reports the HTTP/1.1-over-TLS connections parked now (waiting
// for a request without a goroutine) and how many times one was parked
// since the Proxy started; tests and diagnostics use it.
func (p *Proxy) Parked() (now int64, total uint64) {
	return p.parkStats.now.Load(), p.parkStats.total.Load()
}

// rawConnOf is the socket under a TLS connection (or nc itself), for the
// epoll registration; nil when it has none.
func rawConnOf(nc net.Conn) syscall.RawConn {
	if u, ok := nc.(interface{ NetConn() net.Conn }); ok {
		nc = u.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// ParkSupported reports whether idle TLS connections park here (Linux).
const ParkSupported = parkSupported
