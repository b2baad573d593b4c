// Package sock gives TCP connections a Read and Write that skip the Go
// scheduler's system-call bookkeeping.
//
// net.TCPConn reads and writes through syscall.Syscall, which tells the
// scheduler a goroutine may block in the kernel (entersyscall/exitsyscall).
// Sockets here are non-blocking: read and write return EAGAIN instead of
// blocking, and the goroutine then waits in the netpoller. The bookkeeping is
// pure cost, and more than its own: a write on a loopback connection does
// the receiver's TCP processing inline and often takes over 20µs, long enough
// for the scheduler's monitor thread to hand the processor to another thread
// and wake it, a thread switch per request. On the benchmark that was several
// per cent of the proxy's CPU time (docs/benchmarks.md). Conn issues the
// same read(2) and write(2) as raw system calls through syscall.RawConn,
// which keeps deadlines, Close and the netpoller wait exactly as they are.
package sock

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Conn is a TCP connection whose Read and Write are raw system calls. Like
// net.Conn, a Conn may be used by one reader and one writer at a time.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The callbacks handed to rc are method values made once, so a Read or
	// Write allocates nothing; these carry their arguments and results.
	rp   []byte
	rn   int
	rerr error
	wp   []byte
	wn   int
	werr error

	peekQuiet bool

	readFn, writeFn, peekFn func(fd uintptr) bool
}

// Wrap returns c as a *Conn when it is a TCP connection, and c otherwise.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	s := &Conn{TCPConn: tc, rc: rc}
	s.readFn = s.doRead
	s.writeFn = s.doWrite
	s.peekFn = s.doPeek
	return s
}

// Read reads like net.TCPConn.Read.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rp, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.readFn)
	c.rp = nil
	if err != nil {
		return 0, err
	}
	if c.rerr != nil {
		return c.rn, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", c.rerr)}
	}
	if c.rn == 0 {
		return 0, io.EOF
	}
	return c.rn, nil
}

func (c *Conn) doRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rp[0])), uintptr(len(c.rp)))
		switch e {
		case 0:
			c.rn = int(n)
			return true
		case syscall.EAGAIN:
			return false // wait in the netpoller, then try again
		case syscall.EINTR:
			continue
		}
		c.rerr = e
		return true
	}
}

// Write writes all of p like net.TCPConn.Write.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wp, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.writeFn)
	n := c.wn
	c.wp = nil
	if err != nil {
		return n, err
	}
	if c.werr != nil {
		return n, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("write", c.werr)}
	}
	return n, nil
}

func (c *Conn) doWrite(fd uintptr) bool {
	for c.wn < len(c.wp) {
		rest := c.wp[c.wn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch e {
		case 0:
			c.wn += int(n)
			continue
		case syscall.EAGAIN:
			return false // the send buffer is full: wait until writable
		case syscall.EINTR:
			continue
		}
		c.werr = e
		return true
	}
	return true
}

// Quiet reports whether nothing is waiting to be read on the connection and
// it is still open, without blocking and without consuming anything. An
// idle keep-alive connection to a target must be quiet: bytes on it are a
// response nobody asked for (a second response, the late body of a HEAD or
// 304, the tail of a body longer than its Content-Length), and handing them
// to the next request would give one client another's response.
func (c *Conn) Quiet() bool {
	c.peekQuiet = false
	if err := c.rc.Read(c.peekFn); err != nil {
		return false
	}
	return c.peekQuiet
}

func (c *Conn) doPeek(fd uintptr) bool {
	var b [1]byte
	for {
		_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch e {
		case syscall.EAGAIN:
			c.peekQuiet = true // open, nothing to read
		case syscall.EINTR:
			continue
		}
		// A byte (unsolicited data), 0 (end of stream) or an error: not quiet.
		return true
	}
}

// Quiet reports whether c has nothing waiting to be read and is still open;
// see Conn.Quiet. A connection that is not a *Conn is peeked at through its
// syscall.RawConn when it has one, and is taken as quiet otherwise.
func Quiet(c net.Conn) bool {
	if sc, ok := c.(*Conn); ok {
		return sc.Quiet()
	}
	s, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := s.SyscallConn()
	if err != nil {
		return false
	}
	w := &Conn{rc: rc}
	w.peekFn = w.doPeek
	return w.Quiet()
}
