package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
)

// startRaw serves the raw backend on a fresh 127.0.0.1 port until the test ends.
func startRaw(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &rawServer{resp: newResponses(name), conns: map[net.Conn]struct{}{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.serve(ln)
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		srv.closeAll()
		<-done
	})
	return ln.Addr().String()
}

func TestRawWithNetHTTPClient(t *testing.T) {
	addr := startRaw(t, "blue-1")
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for range 3 { // the same keep-alive connection is reused
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || len(b) != bodySize || resp.Header.Get("X-Backend") != "blue-1" {
			t.Fatalf("GET / = %d, %d bytes, X-Backend %q; want 200, %d bytes, blue-1", resp.StatusCode, len(b), resp.Header.Get("X-Backend"), bodySize)
		}
	}
	resp, err := client.Get("http://" + addr + "/healthz?probe=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 0 {
		t.Errorf("GET /healthz = %d, length %d; want 200, 0", resp.StatusCode, resp.ContentLength)
	}
}

func TestRawUnderStrictLoad(t *testing.T) {
	addr := startRaw(t, "green-2")
	res, err := loadclient.Run(context.Background(), loadclient.Options{Addr: addr, Connections: 8, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summarize()
	if s.Requests == 0 || s.Failed != 0 || s.ByBackend["green-2"] != s.Requests {
		t.Fatalf("summary = %+v; want every request answered by green-2", s)
	}
}

// exchange writes raw bytes and reads n responses from one connection.
func exchange(t *testing.T, addr, raw string, n int) ([]loadclient.Response, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []loadclient.Response
	for range n {
		resp, err := loadclient.ReadResponse(br, []byte("X-Backend"), nil)
		if err != nil {
			t.Fatalf("response %d of %d: %v", len(out)+1, n, err)
		}
		out = append(out, resp)
	}
	return out, c
}

func TestRawPipeliningAndBodies(t *testing.T) {
	addr := startRaw(t, "blue-2")
	raw := "GET / HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
	resps, _ := exchange(t, addr, raw, 3)
	if resps[0].BodyLen != bodySize || resps[1].BodyLen != bodySize || resps[2].BodyLen != 0 {
		t.Errorf("pipelined responses = %+v; want /, / (body skipped), /healthz", resps)
	}
	for _, r := range resps {
		if r.Status != 200 || r.Close || r.Backend != "blue-2" {
			t.Errorf("response %+v; want 200 keep-alive from blue-2", r)
		}
	}
}

func TestRawConnectionClose(t *testing.T) {
	addr := startRaw(t, "blue-1")
	for _, raw := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		resps, c := exchange(t, addr, raw, 1)
		if resps[0].Status != 200 || !resps[0].Close {
			t.Errorf("%q: response %+v; want 200 with Connection: close", raw, resps[0])
		}
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%q: after the response read %d, %v; want EOF", raw, n, err)
		}
	}
	resps, _ := exchange(t, addr, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 2)
	if resps[0].Close {
		t.Errorf("HTTP/1.0 with keep-alive: response closes the connection")
	}
}

func TestRawRejectsWhatItCannotFrame(t *testing.T) {
	addr := startRaw(t, "blue-1")
	for _, raw := range []string{
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"GET / HTTP/2.0\r\n\r\n",
		"GET / HTTP/1.1\r\nno colon\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
		"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 5000) + "\r\n\r\n",
	} {
		resps, _ := exchange(t, addr, raw, 1)
		if resps[0].Status != 400 || !resps[0].Close {
			t.Errorf("%.40q: response %+v; want 400 and close", raw, resps[0])
		}
	}
}

func TestNewResponsesFraming(t *testing.T) {
	r := newResponses("blue-1")
	for name, raw := range map[string][]byte{"root": r.root, "rootClose": r.rootClose, "health": r.health, "healthClose": r.healthClose, "badRequest": r.badRequest} {
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(raw))), nil)
		if err != nil {
			t.Fatalf("%s: net/http cannot parse it: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if int64(len(b)) != resp.ContentLength || resp.Header.Get("X-Backend") != "blue-1" {
			t.Errorf("%s: %d body bytes for Content-Length %d, X-Backend %q", name, len(b), resp.ContentLength, resp.Header.Get("X-Backend"))
		}
		if strings.HasSuffix(name, "Close") != resp.Close && name != "badRequest" {
			t.Errorf("%s: Close = %v", name, resp.Close)
		}
	}
}
