package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/cutover/cutover/internal/dataplane/wire"
)

// TLSPipe is the transport under a crypto/tls server connection that the
// event loops can take over once its handshake is done (Loops.AddTLS).
//
// crypto/tls only reads and writes through blocking calls, so the
// handshake runs on a goroutine, with the pipe passing everything to the
// socket's net.Conn. In a loop, the pipe reads the socket only when epoll
// said it is readable and writes it without blocking, and a read that finds
// nothing returns a temporary timeout error: crypto/tls keeps a partial
// record for the next read and the connection usable on such an error (as
// it does for a read deadline), which lets one goroutine per loop drive
// every connection's TLS records. Why not a goroutine per connection: see
// Loops; over TLS it measured the same difference as over plain HTTP.
//
// A TLSPipe is used by one goroutine at a time: the handshake's, then a
// loop's, then, if the loop hands the connection over, the goroutine
// engine's.
type TLSPipe struct {
	// nc is the socket while a goroutine serves the connection; nil while
	// a loop does.
	nc net.Conn
	// r and w are the loop's side of the socket (a fdSource and an outBuf).
	r io.Reader
	w io.Writer

	laddr, raddr net.Addr
}

// NewTLSPipe returns a pipe over nc, passing everything to it until a loop
// takes the connection; serve crypto/tls over it with tls.Server.
func NewTLSPipe(nc net.Conn) *TLSPipe {
	return &TLSPipe{nc: nc, laddr: nc.LocalAddr(), raddr: nc.RemoteAddr()}
}

// errLoopWait is what a loop's pipe returns for a read that finds nothing:
// a timeout and temporary, so crypto/tls leaves the connection usable.
type errLoopWait struct{}

func (errLoopWait) Error() string   { return "no TLS bytes to read until the socket is readable" }
func (errLoopWait) Timeout() bool   { return true }
func (errLoopWait) Temporary() bool { return true }

// Read reads from the socket: blocking through nc, or, in a loop, what
// is there now.
func (p *TLSPipe) Read(b []byte) (int, error) {
	if p.nc != nil {
		return p.nc.Read(b)
	}
	n, err := p.r.Read(b)
	if err == wire.ErrWouldBlock {
		err = errLoopWait{}
	}
	return n, err
}

// Write writes to the socket: blocking through nc, or, in a loop, as much
// as the socket takes now, the rest left to the loop (outBuf).
func (p *TLSPipe) Write(b []byte) (int, error) {
	if p.nc != nil {
		return p.nc.Write(b)
	}
	return p.w.Write(b)
}

// Close closes nc; in a loop it does nothing, as the loop closes the
// socket after crypto/tls has written its close_notify alert.
func (p *TLSPipe) Close() error {
	if p.nc != nil {
		return p.nc.Close()
	}
	return nil
}

// SyscallConn is nc's, so that a connection a goroutine serves can park
// (Parker); a loop's pipe has none.
func (p *TLSPipe) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := p.nc.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("a TLS pipe in an event loop has no socket of its own")
}

func (p *TLSPipe) LocalAddr() net.Addr  { return p.laddr }
func (p *TLSPipe) RemoteAddr() net.Addr { return p.raddr }

// The deadlines are nc's; a loop keeps its connections' deadlines itself.
func (p *TLSPipe) SetDeadline(t time.Time) error {
	if p.nc != nil {
		return p.nc.SetDeadline(t)
	}
	return nil
}

func (p *TLSPipe) SetReadDeadline(t time.Time) error {
	if p.nc != nil {
		return p.nc.SetReadDeadline(t)
	}
	return nil
}

func (p *TLSPipe) SetWriteDeadline(t time.Time) error {
	if p.nc != nil {
		return p.nc.SetWriteDeadline(t)
	}
	return nil
}

// tlsSource is a loop's TLS connection as a wire.Reader's source: the
// plaintext crypto/tls has, ErrWouldBlock when a record is incomplete.
// Unlike fdSource, a short read does not mean the socket is drained: the
// next records may already be decrypted or buffered in crypto/tls.
type tlsSource struct{ tc *tls.Conn }

func (s tlsSource) Read(p []byte) (int, error) {
	n, err := s.tc.Read(p)
	if _, ok := err.(errLoopWait); ok {
		err = wire.ErrWouldBlock
	}
	return n, err
}
