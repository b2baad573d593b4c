package listen

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
)

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
