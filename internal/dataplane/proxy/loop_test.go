//go:build linux

package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// These tests are about the event loops themselves; the package's other
// tests run against both engines (TestMain).

func loopsOnly(t *testing.T) {
	t.Helper()
	if testEngine != engineLoops {
		t.Skip("event-loop test; runs with the loops engine")
	}
}

// readResponses reads n responses from br.
func readResponses(t *testing.T, br *bufio.Reader, n int) []string {
	t.Helper()
	var bodies []string
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", len(bodies)+1, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("body %d: %v", len(bodies)+1, err)
		}
		bodies = append(bodies, resp.Status+" "+string(b))
	}
	return bodies
}

func TestLoopsPipelinedAndHandedOffMidConnection(t *testing.T) {
	loopsOnly(t)
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(body))
	})
	ps := startProxy(t, proxy.Options{Router: tableWith(newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}}))}, proxy.ConnInfo{})
	c, err := net.Dial("tcp", ps.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// Three requests in one write (pipelined), served by the loop; then a
	// POST, which the loop hands to the goroutine engine with what it read;
	// then a GET the goroutine engine serves on the same connection.
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /3 HTTP/1.1\r\nHost: x\r\n\r\n")
	// One reader for the whole connection: responses arrive back to back.
	br := bufio.NewReader(c)
	got := readResponses(t, br, 2)
	want := []string{"200 OK GET /1 ", "200 OK GET /2 "}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("pipelined response %d = %q, want %q", i+1, got[i], want[i])
		}
	}
	head, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil || head.StatusCode != 200 {
		t.Fatalf("HEAD: %v %v", head, err)
	}
	io.WriteString(c, "POST /4 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /5 HTTP/1.1\r\nHost: x\r\n\r\n")
	for i, want := range []string{"200 OK POST /4 hello", "200 OK GET /5 "} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d after the hand-off: %v", i+1, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if got := resp.Status + " " + string(b); got != want {
			t.Errorf("after the hand-off: %q, want %q", got, want)
		}
	}
}

func TestLargeResponseToSlowReader(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 512<<10) // 8 MiB
	sum := sha256.Sum256(big)
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			// No Content-Length: net/http sends it chunked.
			w.(http.Flusher).Flush()
		}
		w.Write(big)
	})
	ps := startProxy(t, proxy.Options{Router: tableWith(newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}}))}, proxy.ConnInfo{})
	for _, path := range []string{"/length", "/chunked"} {
		c, err := net.Dial("tcp", ps.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		// Slow reads at first fill the socket buffers, so the loop must
		// stop reading the target and wait for the client to be writable.
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		buf := make([]byte, 64<<10)
		var n int64
		for i := 0; ; i++ {
			m, err := resp.Body.Read(buf)
			h.Write(buf[:m])
			n += int64(m)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: after %d bytes: %v", path, n, err)
			}
			if i < 40 {
				time.Sleep(10 * time.Millisecond) // a slow reader, not synchronisation
			}
		}
		if n != int64(len(big)) || !bytes.Equal(h.Sum(nil), sum[:]) {
			t.Errorf("%s: got %d bytes (sha256 match: %v), want %d", path, n, bytes.Equal(h.Sum(nil), sum[:]), len(big))
		}
		c.Close()
	}
}

func TestLoopsCloseAllEndsRequestsAndCloseIdleEmptiesIdleList(t *testing.T) {
	loopsOnly(t)
	release := make(chan struct{})
	defer close(release)
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	})
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	pool, _ := svc.Pool("blue")
	target := pool.Targets()[0]
	ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})

	// Idle connections the loops keep are counted on the target and closed
	// by CloseIdle.
	cl := strictClient()
	for range 4 {
		resp, err := cl.Get("http://" + ps.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	// The loop parks the upstream connection just after the response went
	// to the client, so the client may see it first.
	waitFor(t, func() bool {
		open, idle := target.Conns()
		return open > 0 && idle > 0
	})
	pool.CloseIdle()
	waitFor(t, func() bool {
		open, idle := target.Conns()
		return open == 0 && idle == 0
	})

	// A request in flight when the drain's time runs out (CloseAll) ends:
	// its client connection closes instead of hanging.
	c, err := net.Dial("tcp", ps.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	waitFor(t, func() bool { return pool.InFlight() == 1 })
	pool.CloseAll()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the client connection was not closed after CloseAll (read %d bytes)", n)
	}
	if pool.InFlight() != 0 {
		t.Errorf("pool in flight after CloseAll = %d, want 0", pool.InFlight())
	}
}

func TestLoopsShutdownClosesIdleAndFinishesBusy(t *testing.T) {
	loopsOnly(t)
	started := make(chan struct{})
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			time.Sleep(300 * time.Millisecond) // the request is in flight during Shutdown
		}
		io.WriteString(w, "done")
	})
	ps := startProxy(t, proxy.Options{Router: tableWith(newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}}))}, proxy.ConnInfo{})
	idle, err := net.Dial("tcp", ps.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", ps.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ps.loops.Shutdown(ctx) }()
	// The idle connection closes at once, while the busy one's request is
	// still running (its target takes 300 ms).
	idle.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection after Shutdown: read %d, %v; want EOF", n, err)
	}
	select {
	case <-done:
		t.Error("the idle connection was closed only when Shutdown had finished, not at once")
	default:
	}
	busy.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatalf("the request in flight at Shutdown got no response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "done" || !resp.Close {
		t.Errorf("in-flight response: %d %q close=%v; want 200 \"done\" with Connection: close", resp.StatusCode, body, resp.Close)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestLoopsIdleConnectionsHoldNoBuffers checks that a loop's client
// connection holds a read buffer and request state only while it has bytes
// of a request (nginx-style), so idle keep-alive connections cost little:
// concurrent keep-alive clients, a pipelined pair, a head cut in two, a
// handed-off POST and closed connections all end with nothing held.
func TestLoopsIdleConnectionsHoldNoBuffers(t *testing.T) {
	loopsOnly(t)
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok "+r.URL.Path)
	})
	ps := startProxy(t, proxy.Options{Router: tableWith(newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}}))}, proxy.ConnInfo{})
	held := func() string {
		r, w := ps.loops.Held()
		return fmt.Sprintf("%d read buffers, %d request states", r, w)
	}
	const conns, rounds = 40, 5
	clients := make([]net.Conn, conns)
	for i := range clients {
		c, err := net.Dial("tcp", ps.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		clients[i] = c
	}
	// Every connection carries requests at once, round after round; each
	// client checks every response, and none may fail.
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReader(c)
			for n := range rounds {
				path := fmt.Sprintf("/c%d/r%d", i, n)
				raw := "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"
				if n == rounds-1 && i%2 == 0 {
					// Pipelined: two heads in one write.
					raw += raw
				}
				if _, err := io.WriteString(c, raw); err != nil {
					errs <- err
					return
				}
				for range strings.Count(raw, "GET ") {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						errs <- fmt.Errorf("%s: %w", path, err)
						return
					}
					body, _ := io.ReadAll(resp.Body)
					if resp.StatusCode != 200 || string(body) != "ok "+path {
						errs <- fmt.Errorf("%s: %d %q", path, resp.StatusCode, body)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, _ := ps.loops.Clients(); got != conns {
		t.Fatalf("loops serve %d connections, want %d", got, conns)
	}
	// Held runs on each loop after the events it is handling, so the
	// connections that answered are idle by then.
	if r, w := ps.loops.Held(); r != 0 || w != 0 {
		t.Errorf("%d idle keep-alive connections hold %s; want none", conns, held())
	}

	// A head that arrived in part holds one read buffer until it is whole.
	c := clients[0]
	io.WriteString(c, "GET /part HTTP/1.1\r\nHo")
	waitFor(t, func() bool { r, _ := ps.loops.Held(); return r == 1 })
	if r, w := ps.loops.Held(); r != 1 || w != 0 {
		t.Errorf("with half a head buffered: %s; want 1 read buffer, 0 request states", held())
	}
	io.WriteString(c, "st: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := io.ReadAll(resp.Body); string(body) != "ok /part" {
		t.Errorf("the head cut in two: %q", body)
	}
	if r, w := ps.loops.Held(); r != 0 || w != 0 {
		t.Errorf("after the head cut in two was answered: %s; want none", held())
	}

	// A POST is handed to the goroutine engine with its read buffer, which
	// the loop no longer counts; closed connections give theirs back.
	post := clients[1]
	io.WriteString(post, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	if resp, err := http.ReadResponse(bufio.NewReader(post), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST: %v %v", resp, err)
	}
	io.WriteString(clients[2], "GET /gone HTTP/1.1\r\nHo")
	waitFor(t, func() bool { r, _ := ps.loops.Held(); return r == 1 })
	for _, c := range clients[2:] {
		c.Close()
	}
	waitFor(t, func() bool { n, _ := ps.loops.Clients(); return n == 1 })
	if r, w := ps.loops.Held(); r != 0 || w != 0 {
		t.Errorf("after a hand-off and closing the rest: %s; want none", held())
	}
}
