package demoapp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// served is a running App on a real 127.0.0.1 listener.
type served struct {
	app  *App
	addr string // host:port
	url  string // http://host:port
	done chan error
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start serves an App on 127.0.0.1 and shuts it down when the test ends.
func start(t *testing.T, o Options) *served {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &served{app: New(o), addr: ln.Addr().String(), done: make(chan error, 1)}
	s.url = "http://" + s.addr
	go func() { s.done <- s.app.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.app.Shutdown(ctx) // tests that shut down themselves make this a no-op
		if err := <-s.done; err != nil {
			t.Errorf("Serve returned %v, want nil after Shutdown", err)
		}
	})
	return s
}

// waitFor polls cond until it holds, failing the test after 10s. It awaits a
// state of the app (such as a request being in flight), not a duration.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func client() *http.Client { return &http.Client{Timeout: 20 * time.Second} }

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := client().Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, body
}

func TestInfoReportsReplicaAndForwardingHeaders(t *testing.T) {
	s := start(t, Options{Profile: "set1-server1", Version: "v2", Hostname: "box-7"})

	for _, path := range []string{"/", "/info"} {
		req, err := http.NewRequest("GET", s.url+path+"?a=1&b=%2F", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "example.test"
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		req.Header.Add("X-Forwarded-For", "10.0.0.1")
		req.Header.Set("X-Real-IP", "203.0.113.9")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Request-Id", "req-42")
		resp, err := client().Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d, want 200", path, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET %s: Content-Type %q, want application/json", path, ct)
		}
		if p := resp.Header.Get("X-Profile"); p != "set1-server1" {
			t.Errorf("GET %s: X-Profile %q, want set1-server1", path, p)
		}

		// Decode loosely first: the key names are part of the contract.
		var raw map[string]any
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatalf("GET %s: body %q is not JSON: %v", path, body, err)
		}
		for key, want := range map[string]string{"profile": "set1-server1", "version": "v2", "hostname": "box-7", "path": path, "method": "GET"} {
			if raw[key] != want {
				t.Errorf("GET %s: %q = %v, want %q", path, key, raw[key], want)
			}
		}

		var info Info
		if err := json.Unmarshal(body, &info); err != nil {
			t.Fatal(err)
		}
		if want := path + "?a=1&b=%2F"; info.URI != want {
			t.Errorf("GET %s: uri %q, want %q", path, info.URI, want)
		}
		wantHeaders := map[string]string{
			"Host":              "example.test",
			"X-Forwarded-For":   "203.0.113.9, 10.0.0.1",
			"X-Real-Ip":         "203.0.113.9",
			"X-Forwarded-Proto": "https",
			"X-Request-Id":      "req-42",
		}
		if len(info.Headers) != len(wantHeaders) {
			t.Errorf("GET %s: headers %v, want exactly %v (absent ones left out)", path, info.Headers, wantHeaders)
		}
		for k, v := range wantHeaders {
			if info.Headers[k] != v {
				t.Errorf("GET %s: headers[%q] = %q, want %q", path, k, info.Headers[k], v)
			}
		}
		if info.SleptMS != nil {
			t.Errorf("GET %s: slept_ms set to %d, want absent", path, *info.SleptMS)
		}
	}

	resp, _ := get(t, s.url+"/nope")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope: status %d, want 404", resp.StatusCode)
	}
	if got := s.app.Served(); got != 2 {
		t.Errorf("Served() = %d after two known requests and one 404, want 2", got)
	}
}

func TestHostnameDefaultsToOS(t *testing.T) {
	want, err := os.Hostname()
	if err != nil {
		t.Skipf("os.Hostname: %v", err)
	}
	s := start(t, Options{Profile: "p"})
	_, body := get(t, s.url+"/")
	var info Info
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	if info.Hostname != want {
		t.Errorf("hostname %q, want os.Hostname() %q", info.Hostname, want)
	}
}

func TestHealthToggle(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	check := func(wantStatus int, wantBody string) {
		t.Helper()
		resp, body := get(t, s.url+"/healthz")
		if resp.StatusCode != wantStatus || strings.TrimSpace(string(body)) != wantBody {
			t.Fatalf("GET /healthz: %d %q, want %d %q", resp.StatusCode, body, wantStatus, wantBody)
		}
	}
	post := func(query string, wantStatus int) {
		t.Helper()
		resp, err := client().Post(s.url+"/admin/health?"+query, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != wantStatus {
			t.Fatalf("POST /admin/health?%s: status %d, want %d", query, resp.StatusCode, wantStatus)
		}
	}

	check(200, "ok")
	s.app.SetHealthy(false)
	if s.app.Healthy() {
		t.Fatal("Healthy() true after SetHealthy(false)")
	}
	check(503, "unhealthy")
	s.app.SetHealthy(true)
	check(200, "ok")

	post("ok=false", 200)
	check(503, "unhealthy")
	post("ok=true", 200)
	check(200, "ok")
	post("ok=maybe", 400)
	check(200, "ok")

	resp, _ := get(t, s.url+"/admin/health?ok=false")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /admin/health: status %d, want 405", resp.StatusCode)
	}
	check(200, "ok")

	if got := s.app.HealthChecks(); got != 7 {
		t.Errorf("HealthChecks() = %d, want 7", got)
	}
	if got := s.app.Served(); got != 0 {
		t.Errorf("Served() = %d, want 0: health and admin requests are not counted", got)
	}
}

func TestSlowHonoursMS(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	begin := time.Now()
	resp, body := get(t, s.url+"/slow?ms=250")
	elapsed := time.Since(begin)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var info Info
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	if info.SleptMS == nil || *info.SleptMS < 250 {
		t.Errorf("slept_ms = %v, want >= 250", info.SleptMS)
	}
	if elapsed < 250*time.Millisecond {
		t.Errorf("answered after %v, want >= 250ms", elapsed)
	}
	if info.Profile != "p" || info.Path != "/slow" {
		t.Errorf("info = %+v, want profile p and path /slow", info)
	}

	for _, q := range []string{"ms=-1", "ms=60001", "ms=abc"} {
		resp, body := get(t, s.url+"/slow?"+q)
		if resp.StatusCode != 400 || !strings.Contains(string(body), "ms=") {
			t.Errorf("GET /slow?%s: %d %q, want 400 naming the parameter", q, resp.StatusCode, body)
		}
	}
}

func TestSlowStopsWhenClientLeaves(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", s.url+"/slow?ms=60000", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	waitFor(t, "the /slow request to be in flight", func() bool { return s.app.InFlight() == 1 })
	begin := time.Now()
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("cancelled request succeeded")
	}
	waitFor(t, "the /slow handler to return", func() bool { return s.app.InFlight() == 0 })
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("handler returned %v after the client left, want promptly", d)
	}
}

// sseReader reads server-sent events one at a time.
type sseReader struct{ br *bufio.Reader }

// next returns the data of the next event.
func (r sseReader) next() (Event, error) {
	var ev Event
	var data string
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			if data == "" {
				continue
			}
			err := json.Unmarshal([]byte(data), &ev)
			return ev, err
		}
		if v, ok := strings.CutPrefix(line, "data: "); ok {
			data = v
		}
	}
}

func TestStreamArrivesIncrementally(t *testing.T) {
	s := start(t, Options{Profile: "set2-server1", Hostname: "h"})
	const n, interval = 4, 150
	resp, err := client().Get(s.url + "/stream?n=4&interval=150")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	sr := sseReader{bufio.NewReader(resp.Body)}
	first, err := sr.next()
	if err != nil {
		t.Fatalf("first event: %v", err)
	}
	firstReceived := time.Now()
	events := []Event{first}
	for {
		ev, err := sr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("event %d: %v", len(events)+1, err)
		}
		events = append(events, ev)
	}
	if len(events) != n {
		t.Fatalf("got %d events, want %d", len(events), n)
	}
	for i, ev := range events {
		if ev.Seq != i+1 || ev.Profile != "set2-server1" || ev.Hostname != "h" {
			t.Errorf("event %d = %+v, want seq %d of set2-server1 on h", i+1, ev, i+1)
		}
		if i > 0 && ev.Time.Sub(events[i-1].Time) < interval*time.Millisecond {
			t.Errorf("event %d produced %v after the previous one, want >= %dms", i+1, ev.Time.Sub(events[i-1].Time), interval)
		}
	}
	last := events[n-1]
	if !firstReceived.Before(last.Time) {
		t.Errorf("first event received at %v, not before the last was produced at %v: the stream was buffered",
			firstReceived.Format(time.RFC3339Nano), last.Time.Format(time.RFC3339Nano))
	}
}

// The second event comes a minute after the first: receiving the first at
// all (within the client timeout) shows it was flushed on its own.
func TestStreamFirstEventIsFlushedAlone(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.url+"/stream?n=2&interval=60000", nil)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ev, err := sseReader{bufio.NewReader(resp.Body)}.next()
	if err != nil {
		t.Fatalf("first event did not arrive on its own: %v", err)
	}
	if ev.Seq != 1 {
		t.Errorf("first event seq %d, want 1", ev.Seq)
	}
	cancel()
	waitFor(t, "the /stream handler to notice the client left", func() bool { return s.app.InFlight() == 0 })
}

func TestStreamRejectsBadParameters(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	for _, q := range []string{"n=-1", "n=x", "interval=60001", "interval=-5"} {
		resp, body := get(t, s.url+"/stream?"+q)
		if resp.StatusCode != 400 {
			t.Errorf("GET /stream?%s: %d %q, want 400", q, resp.StatusCode, body)
		}
	}
}

func dialWS(t *testing.T, s *served) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+s.addr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(wsReadLimit)
	return c
}

func echoOnce(t *testing.T, c *websocket.Conn, typ websocket.MessageType, msg []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	gotTyp, got, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if gotTyp != typ || !bytes.Equal(got, msg) {
		t.Fatalf("echo = %v %d bytes, want %v %d bytes, equal", gotTyp, len(got), typ, len(msg))
	}
}

func TestWebSocketEcho(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	c := dialWS(t, s)
	echoOnce(t, c, websocket.MessageText, []byte("hello"))
	echoOnce(t, c, websocket.MessageBinary, []byte{0, 1, 2, 255})
	echoOnce(t, c, websocket.MessageBinary, bytes.Repeat([]byte("x"), 200_000))
	echoOnce(t, c, websocket.MessageText, []byte("after a large one"))
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close: %v", err)
	}
	waitFor(t, "the /ws handler to return", func() bool { return s.app.InFlight() == 0 })
	if got := s.app.Served(); got != 1 {
		t.Errorf("Served() = %d, want 1", got)
	}
}

func TestEchoBody(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	for _, method := range []string{"POST", "PUT", "PATCH"} {
		body := strings.Repeat("payload-"+method+";", 10_000)
		req, _ := http.NewRequest(method, s.url+"/echo", strings.NewReader(body))
		req.Header.Set("Content-Type", "text/x-test")
		resp, err := client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || string(got) != body {
			t.Errorf("%s /echo: status %d, %d bytes back, want 200 and the %d bytes sent", method, resp.StatusCode, len(got), len(body))
		}
		if m := resp.Header.Get("X-Method"); m != method {
			t.Errorf("%s /echo: X-Method %q", method, m)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/x-test" {
			t.Errorf("%s /echo: Content-Type %q, want text/x-test", method, ct)
		}
		if resp.ContentLength != int64(len(body)) {
			t.Errorf("%s /echo: Content-Length %d, want %d", method, resp.ContentLength, len(body))
		}
	}
}

// Each chunk comes back before the next is sent: the body streams both ways.
func TestEchoStreams(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", s.url+"/echo", pr)
	respc := make(chan *http.Response, 1)
	errc := make(chan error, 1)
	go func() {
		resp, err := client().Do(req)
		if err != nil {
			errc <- err
			return
		}
		respc <- resp
	}()
	if _, err := pw.Write([]byte("chunk-1\n")); err != nil {
		t.Fatal(err)
	}
	var resp *http.Response
	select {
	case resp = <-respc:
	case err := <-errc:
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := 1; i <= 3; i++ {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading chunk %d back: %v", i, err)
		}
		if want := "chunk-" + string(rune('0'+i)) + "\n"; line != want {
			t.Fatalf("chunk %d back = %q, want %q", i, line, want)
		}
		if i < 3 {
			if _, err := pw.Write([]byte("chunk-" + string(rune('0'+i+1)) + "\n")); err != nil {
				t.Fatal(err)
			}
		}
	}
	pw.Close()
	rest, err := io.ReadAll(br)
	if err != nil || len(rest) != 0 {
		t.Errorf("after the body ended: %q, %v; want clean EOF", rest, err)
	}
}

func TestBytes(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	for _, n := range []int{0, 1, 27, 100_000} {
		resp, body := get(t, s.url+"/bytes?n="+strconv.Itoa(n))
		if resp.StatusCode != 200 || len(body) != n || resp.ContentLength != int64(n) {
			t.Errorf("GET /bytes?n=%d: status %d, %d bytes, Content-Length %d", n, resp.StatusCode, len(body), resp.ContentLength)
			continue
		}
		for i, b := range body {
			if b != byte('a'+i%26) {
				t.Errorf("GET /bytes?n=%d: byte %d = %q, want %q", n, i, b, byte('a'+i%26))
				break
			}
		}
	}
	if resp, _ := get(t, s.url+"/bytes"); resp.ContentLength != defaultBytes {
		t.Errorf("GET /bytes: Content-Length %d, want default %d", resp.ContentLength, defaultBytes)
	}
	if resp, _ := get(t, s.url+"/bytes?n=-3"); resp.StatusCode != 400 {
		t.Errorf("GET /bytes?n=-3: status %d, want 400", resp.StatusCode)
	}
}

func TestGracefulShutdownCompletesInFlightSlow(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	type result struct {
		status int
		info   Info
		err    error
	}
	resc := make(chan result, 1)
	go func() {
		resp, err := client().Get(s.url + "/slow?ms=300")
		if err != nil {
			resc <- result{err: err}
			return
		}
		defer resp.Body.Close()
		var info Info
		err = json.NewDecoder(resp.Body).Decode(&info)
		resc <- result{status: resp.StatusCode, info: info, err: err}
	}()
	waitFor(t, "the /slow request to be in flight", func() bool { return s.app.InFlight() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.app.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	r := <-resc
	if r.err != nil || r.status != 200 || r.info.SleptMS == nil || *r.info.SleptMS < 300 {
		t.Fatalf("in-flight /slow: status %d, info %+v, err %v; want 200 after 300ms", r.status, r.info, r.err)
	}
	if err := <-s.done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	s.done <- nil // for the cleanup
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Error("listener still accepts after Shutdown")
	}
}

func TestShutdownWaitsForWebSocket(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	c := dialWS(t, s)
	echoOnce(t, c, websocket.MessageText, []byte("before"))

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- s.app.Shutdown(ctx)
	}()
	waitFor(t, "the listener to close", func() bool {
		conn, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	// The session outlives the start of Shutdown...
	echoOnce(t, c, websocket.MessageText, []byte("during shutdown"))
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) while a WebSocket session was open", err)
	default:
	}
	// ...and Shutdown completes cleanly once the client closes it.
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown after the session ended: %v", err)
	}
}

func TestShutdownDeadlineClosesLongConnections(t *testing.T) {
	s := start(t, Options{Profile: "p"})
	c := dialWS(t, s)
	echoOnce(t, c, websocket.MessageText, []byte("hi"))

	resp, err := client().Get(s.url + "/stream?n=2&interval=60000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sr := sseReader{bufio.NewReader(resp.Body)}
	if _, err := sr.next(); err != nil {
		t.Fatalf("first event: %v", err)
	}

	slowErr := make(chan error, 1)
	go func() {
		resp, err := client().Get(s.url + "/slow?ms=60000")
		if err == nil {
			resp.Body.Close()
		}
		slowErr <- err
	}()
	waitFor(t, "/ws, /stream and /slow to be in flight", func() bool { return s.app.InFlight() == 3 })

	// The client keeps reading so it can answer the server's close frame.
	wsErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, _, err := c.Read(ctx)
		wsErr <- err
	}()

	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = s.app.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want an error wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(begin); d > 300*time.Millisecond+goingAwayGrace {
		t.Errorf("Shutdown took %v, want about the 300ms deadline", d)
	}
	if got := websocket.CloseStatus(<-wsErr); got != websocket.StatusGoingAway {
		t.Errorf("WebSocket close status %v, want StatusGoingAway", got)
	}
	if _, err := sr.next(); err == nil {
		t.Error("second event arrived; the stream should have been cut at the deadline")
	}
	if err := <-slowErr; err == nil {
		t.Error("/slow?ms=60000 got a response; it should have been cut at the deadline")
	}
	if n := s.app.InFlight(); n != 0 {
		t.Errorf("InFlight() = %d after Shutdown, want 0", n)
	}
}

// TestFailRate: with FailRate 5%, exactly 5 of 100 GET / answers are 500,
// and /healthz keeps passing.
func TestFailRate(t *testing.T) {
	srv := start(t, Options{Profile: "p", Version: "broken", FailRate: 0.05})
	failed := 0
	for i := 0; i < 100; i++ {
		resp, err := http.Get(srv.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 500 {
			failed++
		}
	}
	if failed != 5 {
		t.Fatalf("%d of 100 GET / failed, want 5", failed)
	}
	resp, err := http.Get(srv.url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz with FailRate: %v %v", resp, err)
	}
	resp.Body.Close()
}
