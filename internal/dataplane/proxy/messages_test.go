package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// rawTarget is a target that answers every connection with answer (after
// reading the request head) and closes it.
func rawTarget(t *testing.T, answer string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				io.WriteString(c, answer)
			}()
		}
	}()
	return &backend{Server: &httptest.Server{URL: "http://" + ln.Addr().String()}, name: "raw"}
}

// TestBadGatewaySaysWhatHappened: a target that answers with a broken
// status line is not reported as unreachable, and one that closes without
// answering is not either.
func TestBadGatewaySaysWhatHappened(t *testing.T) {
	for _, tc := range []struct {
		name, answer, want string
	}{
		{"malformed status line", "HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", "malformed response"},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", "malformed response"},
		{"closed before answering", "", "failed before a complete response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := rawTarget(t, tc.answer)
			svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
			ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})
			resp, body := rawResponse(t, ps.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp.StatusCode != 502 || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %q, want 502 saying %q", resp.StatusCode, body, tc.want)
			}
			if strings.Contains(body, "could not be reached") {
				t.Fatalf("body %q says the target could not be reached; it answered", body)
			}
		})
	}
}

// TestLocalErrorBodiesHoldNoSocketText: the 408 for a slow head and the
// 400 for a malformed one say what was wrong in the client's terms, on
// both engines, without the proxy's addresses or Go's error text.
func TestLocalErrorBodiesHoldNoSocketText(t *testing.T) {
	b := newBackend(t, "b", nil)
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc), ReadHeaderTimeout: 200 * time.Millisecond}, proxy.ConnInfo{})

	c, err := net.Dial("tcp", ps.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	body := string(got)
	if resp.StatusCode != 408 || body != "408 Request Timeout: the request head did not arrive in time\n" {
		t.Fatalf("slow head: %d %q", resp.StatusCode, body)
	}

	resp, body = rawResponse(t, ps.addr, "GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
	if resp.StatusCode != 400 {
		t.Fatalf("malformed head: %d %q, want 400", resp.StatusCode, body)
	}
	for _, leak := range []string{"127.0.0.1", "tcp", "400: ", "i/o"} {
		if strings.Contains(body, leak) {
			t.Fatalf("malformed head: body %q contains %q", body, leak)
		}
	}
}
