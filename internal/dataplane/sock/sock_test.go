package sock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pair returns a wrapped client connection and the server's end.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	t.Cleanup(func() { c.Close(); srv.Close() })
	w, ok := Wrap(c).(*Conn)
	if !ok {
		t.Fatal("Wrap did not wrap a TCP connection")
	}
	return w, srv
}

func TestReadWriteLikeTCPConn(t *testing.T) {
	c, srv := pair(t)
	// A write larger than the socket buffers completes in full (EAGAIN
	// waits in the netpoller) while the peer reads.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(srv, int64(len(big))))
		got <- b
	}()
	n, err := c.Write(big)
	if err != nil || n != len(big) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(big))
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("peer read %d bytes, not what was written", len(b))
	}
	// Reads return what arrived, then EOF when the peer closes.
	srv.Write([]byte("hello"))
	buf := make([]byte, 64)
	n, err = c.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	srv.Close()
	if n, err = c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after peer close = %d, %v; want 0, EOF", n, err)
	}
}

func TestReadDeadlineAndClose(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 8)
	_, err := c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v, want a timeout", err)
	}
	// Close from another goroutine ends a blocked Read.
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := c.Read(buf); done <- err }()
	// Whether the Read is blocked yet or not, Close must end it.
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a blocked Read")
	}
}

func TestResetIsAnOpError(t *testing.T) {
	c, srv := pair(t)
	// An abortive close (RST) makes the next read fail with ECONNRESET.
	srv.(*net.TCPConn).SetLinger(0)
	srv.Close()
	buf := make([]byte, 8)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = c.Read(buf)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) && err != io.EOF {
		t.Fatalf("Read after reset: %T %v, want *net.OpError", err, err)
	}
}

func TestWrapLeavesOtherConnsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("Wrap changed a non-TCP connection")
	}
}

func TestNoAllocations(t *testing.T) {
	c, srv := pair(t)
	go io.Copy(srv, srv) // echo
	msg := []byte("ping")
	buf := make([]byte, 16)
	allocs := testing.AllocsPerRun(200, func() {
		c.Write(msg)
		io.ReadFull(c, buf[:len(msg)])
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write+read, want 0", allocs)
	}
}

// TestQuiet: an open connection with nothing to read is quiet; one with a
// byte waiting, or one the peer closed, is not; peeking consumes nothing.
func TestQuiet(t *testing.T) {
	c, srv := pair(t)
	if !c.Quiet() {
		t.Fatal("an open connection with nothing to read is not quiet")
	}
	if _, err := srv.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if c.Quiet() {
		t.Fatal("a connection with a byte waiting is quiet")
	}
	buf := make([]byte, 4)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "x" {
		t.Fatalf("read after Quiet: %q, %v; the peek must not consume", buf[:n], err)
	}
	if !c.Quiet() {
		t.Fatal("not quiet once the byte was read")
	}
	srv.Close()
	if c.Quiet() {
		t.Fatal("a connection the peer closed is quiet")
	}
	// An unwrapped connection is peeked at through its RawConn.
	c2, srv2 := pair(t)
	srv2.Write([]byte("y"))
	if Quiet(c2.TCPConn) {
		t.Fatal("Quiet on a plain *net.TCPConn missed a waiting byte")
	}
}

func TestQuietAllocatesNothing(t *testing.T) {
	c, _ := pair(t)
	if n := testing.AllocsPerRun(100, func() { c.Quiet() }); n != 0 {
		t.Fatalf("Quiet allocates %v times per call", n)
	}
}
