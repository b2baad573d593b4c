package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/demoapp"
)

// TestTargetKilledUnderLoad kills one of two targets while 16 keep-alive
// clients send GETs: no request may fail.
func TestTargetKilledUnderLoad(t *testing.T) {
	b1 := newBackend(t, "b1", nil)
	b2 := newBackend(t, "b2", nil)
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b1, b2}})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})

	var sent, failed, fromB2AfterKill atomic.Int64
	var killed atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := strictClient()
			for n := 0; n < 100000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				resp, err := c.Get("http://" + ps.addr + "/")
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, b))
				} else if string(b) == "b2" && killed.Load() {
					fromB2AfterKill.Add(1)
				}
			}
		}()
	}
	waitFor(t, func() bool { return sent.Load() > 1000 })
	// Kill b2: its listener and every connection, mid-load.
	b2.CloseClientConnections()
	b2.Listener.Close()
	b2.CloseClientConnections()
	killed.Store(true)
	before := sent.Load()
	waitFor(t, func() bool { return sent.Load() > before+1500 })
	close(stop)
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d GETs failed after a target was killed; first: %v", f, sent.Load(), firstErr.Load())
	}
	t.Logf("%d GETs, 0 failed; target b2 state after kill: %s", sent.Load(), svc.Active().Targets()[1].State())
	if st := svc.Active().Targets()[1].State(); st != upstream.Down {
		t.Errorf("killed target is %s, want down (passive health)", st)
	}
}

// waitFor polls a condition that has no signal of its own (request counts
// of load goroutines), bounded in time.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPostNotReplayed: a target that reads a POST's body and then dies
// without answering gets it once; the client gets 502, and the other
// target never sees it.
func TestPostNotReplayed(t *testing.T) {
	var got atomic.Int64
	dying := newBackend(t, "dying", func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		got.Add(1)
		// Die without a response byte.
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	})
	var other atomic.Int64
	healthy := newBackend(t, "healthy", func(w http.ResponseWriter, r *http.Request) {
		other.Add(1)
		io.WriteString(w, "ok")
	})
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{dying, healthy}})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})
	// Round robin: send until a POST lands on the dying target.
	for i := 0; i < 4 && got.Load() == 0; i++ {
		resp, body := rawResponse(t, ps.addr, "POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
		if got.Load() == 1 {
			if resp.StatusCode != 502 {
				t.Fatalf("POST whose target died: status %d %q, want 502", resp.StatusCode, body)
			}
		}
	}
	if got.Load() != 1 {
		t.Fatalf("dying target received %d POSTs, want exactly 1", got.Load())
	}
	if n := other.Load(); n > 3 {
		t.Fatalf("healthy target received %d", n)
	}
	// The GET counterpart is retried on the healthy target.
	otherBefore := other.Load()
	dyingBefore := got.Load()
	for i := 0; i < 4; i++ {
		resp, body := rawResponse(t, ps.addr, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("GET: %d %q, want it retried to the healthy target", resp.StatusCode, body)
		}
	}
	if other.Load()-otherBefore != 4 {
		t.Errorf("healthy target answered %d of 4 GETs", other.Load()-otherBefore)
	}
	_ = dyingBefore
}

func TestSSEArrivesIncrementally(t *testing.T) {
	app := demoapp.New(demoapp.Options{Profile: "blue-1"})
	srv := httptest.NewServer(app.Handler())
	t.Cleanup(srv.Close)
	b := &backend{Server: srv, name: "blue-1"}
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})
	resp, err := http.Get("http://" + ps.addr + "/stream?n=3&interval=400")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	start := time.Now()
	var arrivals []time.Duration
	for len(arrivals) < 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d events: %v", len(arrivals), err)
		}
		if strings.HasPrefix(line, "data:") {
			arrivals = append(arrivals, time.Since(start))
		}
	}
	// Events are 400 ms apart at the source: each must arrive on its own,
	// not all at the end.
	if arrivals[1]-arrivals[0] < 200*time.Millisecond || arrivals[2]-arrivals[1] < 200*time.Millisecond {
		t.Fatalf("events arrived together (at %v), want them as produced", arrivals)
	}
}

func TestWebSocketEcho(t *testing.T) {
	app := demoapp.New(demoapp.Options{Profile: "blue-1"})
	srv := httptest.NewServer(app.Handler())
	t.Cleanup(srv.Close)
	b := &backend{Server: srv, name: "blue-1"}
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+ps.addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	for i := 0; i < 5; i++ {
		msg := fmt.Sprintf("hello %d", i)
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != msg {
			t.Fatalf("echo %q, want %q", got, msg)
		}
	}
	big := make([]byte, 200<<10)
	rand.Read(big)
	if err := ws.Write(ctx, websocket.MessageBinary, big); err != nil {
		t.Fatal(err)
	}
	_, got, err := ws.Read(ctx)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("200 KiB binary echo: equal=%v err=%v", bytes.Equal(got, big), err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
}

func TestSlowHeaderClientIsCut(t *testing.T) {
	b := newBackend(t, "b", nil)
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc), ReadHeaderTimeout: 300 * time.Millisecond}, proxy.ConnInfo{})
	c, err := net.Dial("tcp", ps.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	// A slowloris client: a partial head, then a byte now and then.
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n")
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var resp []byte
	for {
		io.WriteString(c, "X")
		n, err := c.Read(buf)
		resp = append(resp, buf[:n]...)
		if err != nil {
			break
		}
	}
	took := time.Since(start)
	if took > 2*time.Second {
		t.Fatalf("slow header client held the connection %v, want ~300ms", took)
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 408")) {
		t.Fatalf("slow header client got %q, want 408 then close", resp)
	}
}

func TestNoTargetStatuses(t *testing.T) {
	// 503: the pool has no targets.
	empty := newService("web", upstream.RoundRobin, poolSpec{"blue", nil})
	ps := startProxy(t, proxy.Options{Router: tableWith(empty)}, proxy.ConnInfo{})
	resp, body := rawResponse(t, ps.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 503 || !strings.Contains(body, "no targets") {
		t.Errorf("empty pool: %d %q", resp.StatusCode, body)
	}

	// 502: nothing listens.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := &backend{Server: &httptest.Server{URL: "http://" + ln.Addr().String()}, name: "dead"}
	ln.Close()
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{dead}})
	ps = startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})
	start := time.Now()
	resp, body = rawResponse(t, ps.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 502 || !strings.Contains(body, "could not be reached") && !strings.Contains(body, "no target") {
		t.Errorf("refused target: %d %q", resp.StatusCode, body)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("502 took %v", time.Since(start))
	}

	// 504: the target does not answer within the response timeout.
	hang := make(chan struct{})
	slow := newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) { <-hang })
	t.Cleanup(func() { close(hang) })
	svc = newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{slow}})
	ps = startProxy(t, proxy.Options{Router: tableWith(svc), ResponseTimeout: 300 * time.Millisecond}, proxy.ConnInfo{})
	start = time.Now()
	resp, body = rawResponse(t, ps.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 504 {
		t.Errorf("hanging target: %d %q, want 504", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("504 took %v, want ~300ms", d)
	}
}

func TestBodiesStreamBothWays(t *testing.T) {
	app := demoapp.New(demoapp.Options{Profile: "blue-1"})
	srv := httptest.NewServer(app.Handler())
	t.Cleanup(srv.Close)
	b := &backend{Server: srv, name: "blue-1"}
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})
	c := strictClient()

	// A 5 MiB body with Content-Length, and one chunked, echoed back.
	payload := make([]byte, 5<<20)
	rand.Read(payload)
	want := sha256.Sum256(payload)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(payload)
		if chunked {
			body = io.MultiReader(body) // hides the length: sent chunked
		}
		req, _ := http.NewRequest("POST", "http://"+ps.addr+"/echo", body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || sha256.Sum256(got) != want {
			t.Fatalf("chunked=%v: status %d, %d bytes back, err %v", chunked, resp.StatusCode, len(got), err)
		}
	}
	// HEAD has no body but keeps Content-Length; the connection stays usable.
	resp, err := c.Head("http://" + ps.addr + "/bytes?n=1234")
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != 1234 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	resp.Body.Close()
	if got := get(t, c, "http://"+ps.addr+"/bytes?n=10"); got != "abcdefghij" {
		t.Fatalf("after HEAD: %q", got)
	}
}

// TestStrictParsingAtTheProxy: smuggling-shaped requests are refused by
// cutover and never reach a target.
func TestStrictParsingAtTheProxy(t *testing.T) {
	var reached atomic.Int64
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) { reached.Add(1) })
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc), MaxHeaderBytes: 4096}, proxy.ConnInfo{})
	cases := map[string]struct {
		req  string
		code int
	}{
		"CL and TE":         {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		"duplicate CL":      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400},
		"invalid CL":        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400},
		"unknown TE":        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		"space before ':'":  {"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400},
		"obs-fold":          {"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400},
		"bare LF":           {"GET / HTTP/1.1\nHost: a\n\n", 400},
		"no Host in 1.1":    {"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400},
		"HTTP/2.0 request":  {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		"over-long head":    {"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", 5000) + "\r\n\r\n", 431},
		"NUL in value":      {"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400},
		"bad chunk framing": {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
	}
	for name, c := range cases {
		resp, _ := rawResponse(t, ps.addr, c.req)
		want := c.code
		if name == "bad chunk framing" {
			// The head is fine; the body is read while forwarding and the
			// request fails as a bad request without a response upstream.
			if resp.StatusCode != 400 && resp.StatusCode != 502 {
				t.Errorf("%s: status %d", name, resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != want {
			t.Errorf("%s: status %d, want %d", name, resp.StatusCode, want)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d malformed requests reached the target", n)
	}
}
