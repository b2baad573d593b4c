package listen

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

// loopListener is the plain listener when the event loops serve its
// connections: they are accepted with accept4(2) on the listening socket
// and handed to a loop as a bare descriptor (proxy.Loops.AddSocket),
// without making a net.Conn of each. net.Listener.Accept asks the new
// socket's address, sets TCP_NODELAY and three keep-alive options on it
// and registers it with the netpoller; the loops then duplicated the
// descriptor and closed the net.Conn, which deregistered it: eleven system
// calls per connection before its first read, where nginx makes two
// (accept4, epoll_ctl). The socket options are set once on the listening
// socket instead (setConnOptions), which Linux copies to every socket it
// accepts.
//
// The socket is held as a non-blocking *os.File, which the netpoller
// waits on for a raw Read; a net.Listener's RawConn refuses to Read.
type loopListener struct {
	f    *os.File
	rc   syscall.RawConn
	addr net.Addr
}

// newLoopListener takes over ln's socket: it is duplicated and ln closed.
func newLoopListener(ln net.Listener) (*loopListener, error) {
	fd, err := dupListener(ln)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "listener "+ln.Addr().String())
	rc, err := f.SyscallConn()
	if err == nil {
		err = setConnOptions(rc)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("setting the accepted connections' socket options: %w", err)
	}
	l := &loopListener{f: f, rc: rc, addr: ln.Addr()}
	ln.Close()
	return l, nil
}

// Accept is not how connections leave a loopListener: see acceptForLoops.
func (l *loopListener) Accept() (net.Conn, error) {
	return nil, errors.New("the event loops accept this listener's connections")
}

// Close closes the listening socket; a wait in acceptForLoops returns.
func (l *loopListener) Close() error { return l.f.Close() }

// Addr is the bound address.
func (l *loopListener) Addr() net.Addr { return l.addr }

// SyscallConn gives the socket, for a hand-over to another process.
func (l *loopListener) SyscallConn() (syscall.RawConn, error) { return l.rc, nil }

// acceptForLoops accepts ln's connections and gives each to a loop, until
// ln is closed.
func (s *Server) acceptForLoops(ln *loopListener) error {
	var (
		fd   int
		sa   syscall.Sockaddr
		aerr error
	)
	accept := func(lfd uintptr) bool {
		fd, sa, aerr = syscall.Accept4(int(lfd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		return aerr != syscall.EAGAIN
	}
	var delay time.Duration
	for {
		if err := ln.rc.Read(accept); err != nil {
			if s.closing.Load() {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		switch {
		case aerr == nil:
			delay = 0
			s.loops.AddSocket(fd, tcpAddr(sa))
		case aerr == syscall.EINTR || aerr == syscall.ECONNABORTED:
			// A signal, or the client gave up before it was accepted:
			// net.Listener.Accept retries these too.
		case s.backOff(&delay, aerr):
		default:
			return fmt.Errorf("accept on %s: %w", ln.Addr(), os.NewSyscallError("accept4", aerr))
		}
	}
}

// tcpAddr is the net.Addr of an accepted socket's peer.
func tcpAddr(sa syscall.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: a.Port}
	case *syscall.SockaddrInet6:
		addr := &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: a.Port}
		if a.ZoneId != 0 {
			addr.Zone = strconv.Itoa(int(a.ZoneId))
		}
		return addr
	}
	return nil
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
func setConnOptions(rc syscall.RawConn) error {
	opts := []struct{ level, opt, value int }{
		{syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdle},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveInterval},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for _, o := range opts {
			if err := syscall.SetsockoptInt(int(fd), o.level, o.opt, o.value); err != nil {
				serr = os.NewSyscallError("setsockopt", err)
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
