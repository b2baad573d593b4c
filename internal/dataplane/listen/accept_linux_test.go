package listen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestLoopsAcceptNewConnectionsUnderLoad: with the loops accepting from
// the listening socket themselves, concurrent clients that open a
// connection per request get every answer, with their address forwarded; once Shutdown returns the port
// refuses connections and Serve has returned nil. (Connections still in
// the listen queue when a socket closes are reset by the kernel, which is
// why a hand-over keeps the socket open in the new process.)
func TestLoopsAcceptNewConnectionsUnderLoad(t *testing.T) {
	// The answer is the client address the proxy forwarded, which a loop
	// takes from accept4's peer address.
	px := newProxy(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.Header.Get("X-Forwarded-For")) })
	s, err := New(Options{HTTP: "127.0.0.1:0", Proxy: px, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if s.Loops() == 0 {
		t.Skip("no event loops on this system")
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	addr := s.HTTPAddr().String()
	const workers, perWorker = 8, 150
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					failed.Add(1)
					t.Errorf("request %d: %v", i, err)
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					failed.Add(1)
					t.Errorf("request %d: %v", i, err)
					c.Close()
					return
				}
				body, err := io.ReadAll(resp.Body)
				c.Close()
				if err != nil || resp.StatusCode != 200 || string(body) != "127.0.0.1" {
					failed.Add(1)
					t.Errorf("request %d: %d %q %v", i, resp.StatusCode, body, err)
					return
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve returned %v after a shutdown, want nil", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("the port still accepts connections after Shutdown")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after Shutdown: %v, want connection refused", err)
	}
	if failed.Load() != 0 || ok.Load() != workers*perWorker {
		t.Fatalf("%d of %d requests answered, %d failed", ok.Load(), workers*perWorker, failed.Load())
	}
	t.Logf("%d requests on new connections answered, 0 failed", ok.Load())
}

// TestLoopConnectionsHaveTheSocketOptions: the plain listener's
// connections reach the loops as accept4 made them, so TCP_NODELAY and the
// keep-alive probes come from the listening socket; the test finds the
// proxy's side of a connection among this process's descriptors and reads
// them there.
func TestLoopConnectionsHaveTheSocketOptions(t *testing.T) {
	px := newProxy(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	s := runServer(t, Options{HTTP: "127.0.0.1:0", Proxy: px, Logger: quietLogger()})
	if s.Loops() == 0 {
		t.Skip("no event loops on this system")
	}
	c, err := net.Dial("tcp", s.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A request answered: the connection is on a loop.
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET through the proxy: %v %v", resp, err)
	}
	resp.Body.Close()

	fd := peerFD(t, c.LocalAddr().(*net.TCPAddr), s.HTTPAddr().(*net.TCPAddr))
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdle},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveInterval},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
	} {
		got, err := syscall.GetsockoptInt(fd, o.level, o.opt)
		if err != nil {
			t.Fatalf("getsockopt %s on descriptor %d: %v", o.name, fd, err)
		}
		if (o.want == 1 && got == 0) || (o.want != 1 && got != o.want) {
			t.Errorf("the proxy's side of a plain connection has %s = %d, want %d", o.name, got, o.want)
		}
	}
}

// peerFD finds this process's descriptor for the TCP connection from
// client to server (the proxy's side of it).
func peerFD(t *testing.T, client, server *net.TCPAddr) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list this process's descriptors: %v", err)
	}
	found := -1
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		local, err1 := syscall.Getsockname(fd)
		peer, err2 := syscall.Getpeername(fd)
		if err1 != nil || err2 != nil {
			continue
		}
		l, ok1 := local.(*syscall.SockaddrInet4)
		p, ok2 := peer.(*syscall.SockaddrInet4)
		if ok1 && ok2 && l.Port == server.Port && p.Port == client.Port {
			if found >= 0 {
				t.Fatalf("descriptors %d and %d both hold the proxy's side of the connection from %s", found, fd, client)
			}
			found = fd
		}
	}
	if found < 0 {
		t.Fatalf("no descriptor of this process holds the proxy's side of the connection from %s", client)
	}
	return found
}
