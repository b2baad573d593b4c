package listen

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/cutover/cutover/internal/dataplane/proxy"
)

// loopListener is the plain listener when the event loops serve its
// connections: each loop has the listening socket in its epoll set and
// accepts from it itself (proxy.Loops.Accept), so a connection is a bare
// descriptor in a loop from accept4 on, with no net.Conn, netpoller or
// hand-over between goroutines. net.Listener.Accept asks each new socket's
// address, sets TCP_NODELAY and three keep-alive options on it and
// registers it with the netpoller; here the socket options are set once on
// the listening socket instead (setConnOptions), which Linux copies to
// every socket it accepts.
//
// The socket is held as a bare descriptor, not an *os.File: an os.File of
// a non-blocking socket joins Go's netpoller, whose epoll set would then be
// woken by every connection the loops accept.
type loopListener struct {
	addr net.Addr

	mu     sync.Mutex
	fd     int // -1 once closed
	acc    *proxy.Accepting
	closed chan struct{}
}

// newLoopListener takes over ln's socket: it is duplicated and ln closed.
func newLoopListener(ln net.Listener) (*loopListener, error) {
	fd, err := dupListener(ln)
	if err != nil {
		return nil, err
	}
	if err := setConnOptions(fd); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("setting the accepted connections' socket options: %w", err)
	}
	l := &loopListener{fd: fd, addr: ln.Addr(), closed: make(chan struct{})}
	ln.Close()
	return l, nil
}

// Accept is not how connections leave a loopListener: see acceptForLoops.
func (l *loopListener) Accept() (net.Conn, error) {
	return nil, errors.New("the event loops accept this listener's connections")
}

// Close takes the socket out of the loops, then closes it; a wait in
// acceptForLoops returns.
func (l *loopListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fd < 0 {
		return nil
	}
	if l.acc != nil {
		// The loops must be done with the descriptor before it closes:
		// its number may be reused at once.
		l.acc.Stop()
	}
	err := syscall.Close(l.fd)
	l.fd = -1
	close(l.closed)
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// Addr is the bound address.
func (l *loopListener) Addr() net.Addr { return l.addr }

// SyscallConn gives the socket, for a hand-over to another process
// (Control only).
func (l *loopListener) SyscallConn() (syscall.RawConn, error) { return listenerRaw{l}, nil }

// listenerRaw is a loopListener's syscall.RawConn: Control under the
// listener's lock, so the descriptor cannot close meanwhile.
type listenerRaw struct{ l *loopListener }

func (r listenerRaw) Control(f func(fd uintptr)) error {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	if r.l.fd < 0 {
		return net.ErrClosed
	}
	f(uintptr(r.l.fd))
	return nil
}

func (listenerRaw) Read(func(fd uintptr) bool) error {
	return errors.New("the event loops read this listener")
}

func (listenerRaw) Write(func(fd uintptr) bool) error {
	return errors.New("a listening socket is not written")
}

// acceptForLoops has the loops accept ln's connections until ln is
// closed.
func (s *Server) acceptForLoops(ln *loopListener) error {
	failed := make(chan error, 1)
	ln.mu.Lock()
	if ln.fd < 0 {
		ln.mu.Unlock()
		return nil
	}
	acc, err := s.loops.Accept(proxy.AcceptOptions{FD: ln.fd, Failed: func(err error) { failed <- err }})
	ln.acc = acc
	ln.mu.Unlock()
	if err != nil {
		return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	}
	select {
	case <-ln.closed:
		return nil
	case err := <-failed:
		if s.closing.Load() {
			return nil
		}
		return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	}
}

// The keep-alive probes of accepted connections, as net.Listener.Accept
// sets them by default.
const (
	keepAliveIdle     = 15 // seconds
	keepAliveInterval = 15 // seconds
	keepAliveCount    = 9
)

// setConnOptions sets on a listening socket what net.Listener.Accept sets
// on each connection it accepts (TCP_NODELAY and keep-alive probes), for
// the sockets accepted from it to inherit.
func setConnOptions(fd int) error {
	opts := []struct{ level, opt, value int }{
		{syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdle},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveInterval},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
	}
	for _, o := range opts {
		if err := syscall.SetsockoptInt(fd, o.level, o.opt, o.value); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
	}
	return nil
}
