package listen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/proxy"
)

func loopsOnly(t *testing.T) {
	t.Helper()
	if !proxy.LoopsSupported {
		t.Skip("the event loops need Linux's epoll")
	}
}

// tlsRequest is one request of a keep-alive client and what it checks.
type tlsRequest struct {
	method, path, body string
}

func (r tlsRequest) raw() string {
	if r.method == "POST" {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s", r.path, len(r.body), r.body)
	}
	return "GET " + r.path + " HTTP/1.1\r\nHost: localhost\r\n\r\n"
}

func (r tlsRequest) want() string {
	switch {
	case r.method == "POST":
		return r.body
	case r.path == "/big":
		return strings.Repeat("x", bigBodyLen)
	}
	return "ok " + r.path
}

// exchange sends reqs at once (pipelined when more than one) and checks
// every answer: 200, its body, kept alive, and X-Forwarded-Proto https.
func exchangeTLS(c *tls.Conn, br *bufio.Reader, reqs ...tlsRequest) error {
	var raw strings.Builder
	for _, r := range reqs {
		raw.WriteString(r.raw())
	}
	if _, err := io.WriteString(c, raw.String()); err != nil {
		return fmt.Errorf("writing %v: %w", reqs, err)
	}
	for _, r := range reqs {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("%s %s: %w", r.method, r.path, err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || string(got) != r.want() {
			return fmt.Errorf("%s %s: status %d, %d bytes (%v); want 200 and %d bytes", r.method, r.path, resp.StatusCode, len(got), err, len(r.want()))
		}
		if p := resp.Header.Get("X-Got-Proto"); p != "https" {
			return fmt.Errorf("%s %s: the target got X-Forwarded-Proto %q; want https", r.method, r.path, p)
		}
		if resp.Close {
			return fmt.Errorf("%s %s: the response says Connection: close", r.method, r.path)
		}
	}
	return nil
}

// TestTLSOnTheLoopsLosesNoRequest: keep-alive HTTP/1.1-over-TLS clients
// move to the event loops after their first request and are served there:
// small and multi-record responses, pipelined pairs, every answer checked
// and none failed. Clients that send a body are handed to the goroutine
// engine mid-connection and go on there, still over the same TLS session.
// Afterwards the loops hold exactly the clients that sent no body.
func TestTLSOnTheLoopsLosesNoRequest(t *testing.T) {
	loopsOnly(t)
	s, _, cfg := tlsHTTP1Server(t, proxy.Options{}, EngineLoops)
	const conns, rounds, postRound = 24, 30, 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	sent, failed := 0, 0
	var firstErr error
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialTLS(t, s.HTTPSAddr().String(), cfg)
			c.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			for n := range rounds {
				get := tlsRequest{method: "GET", path: fmt.Sprintf("/c%d/r%d", i, n)}
				reqs := []tlsRequest{get}
				switch {
				case n%5 == 1:
					reqs[0].path = "/big"
				case n%5 == 3:
					reqs = append(reqs, tlsRequest{method: "GET", path: get.path + "/again"})
				}
				if i%2 == 1 && n == postRound {
					reqs = []tlsRequest{{method: "POST", path: get.path, body: strings.Repeat("p", 3000)}}
				}
				err := exchangeTLS(c, br, reqs...)
				mu.Lock()
				sent += len(reqs)
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = fmt.Errorf("client %d round %d: %w", i, n, err)
					}
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed > 0 {
		t.Fatalf("%d of %d requests failed; first: %v", failed, sent, firstErr)
	}
	t.Logf("%d requests over %d TLS connections, 0 failed", sent, conns)
	waitFor(t, 10*time.Second, func() (bool, string) {
		all, overTLS := s.loops.Clients()
		return all == conns/2 && overTLS == conns/2 && httpsConns(s) == conns,
			fmt.Sprintf("the loops serve %d connections (%d over TLS), %d counted in all; want %d on the loops and %d in all", all, overTLS, httpsConns(s), conns/2, conns)
	})
}

// TestTLSOnTheLoopsLargeResponse: a response of many TLS records, larger
// than the socket buffers, reaches a slow client byte for byte, and the
// connection serves on after it. The client reads 16 KiB a millisecond
// through a 64 KiB receive buffer (set before it connects, so the window
// is sized for it): slower than the loop writes, and the response is
// larger than the socket buffers, so the loop's writes come up short and
// it must keep the rest.
func TestTLSOnTheLoopsLargeResponse(t *testing.T) {
	loopsOnly(t)
	const size = 8 << 20
	body := pattern(size)
	s, _, cfg := tlsServerFor(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Got-Proto", r.Header.Get("X-Forwarded-Proto"))
		if r.URL.Path == "/huge" {
			w.Write(body)
			return
		}
		io.WriteString(w, "ok "+r.URL.Path)
	}), proxy.Options{}, EngineLoops)
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := tls.DialWithDialer(d, "tcp", s.HTTPSAddr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	if err := exchangeTLS(c, br, tlsRequest{method: "GET", path: "/first"}); err != nil {
		t.Fatal(err)
	}
	onLoops(t, s, 1)
	io.WriteString(c, "GET /huge HTTP/1.1\r\nHost: localhost\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(slowReader{r: resp.Body, chunk: 16 << 10, pause: time.Millisecond})
	if err != nil || len(got) != size || !bytes.Equal(got, body) {
		t.Fatalf("/huge: %d of %d bytes (%v), equal %v", len(got), size, err, bytes.Equal(got, body))
	}
	if err := exchangeTLS(c, br, tlsRequest{method: "GET", path: "/after"}); err != nil {
		t.Fatal(err)
	}
}

// slowReader reads at most chunk bytes at a time, pausing after each:
// a client on a slow link (the pause is the load pattern, not a wait
// for anything).
type slowReader struct {
	r     io.Reader
	chunk int
	pause time.Duration
}

func (s slowReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b[:min(len(b), s.chunk)])
	time.Sleep(s.pause)
	return n, err
}

// onLoops waits until the loops serve n TLS connections.
func onLoops(t *testing.T, s *Server, n int64) {
	t.Helper()
	waitFor(t, 10*time.Second, func() (bool, string) {
		_, overTLS := s.loops.Clients()
		return overTLS == n, fmt.Sprintf("%d TLS connections on the loops; want %d", overTLS, n)
	})
}

// TestTLSOnTheLoopsCloseAtIdleTimeout: a TLS connection idle on a loop is
// closed at the idle timeout.
func TestTLSOnTheLoopsCloseAtIdleTimeout(t *testing.T) {
	loopsOnly(t)
	s, _, cfg := tlsHTTP1Server(t, proxy.Options{IdleTimeout: 400 * time.Millisecond}, EngineLoops)
	c := dialPark(t, s, cfg)
	if err := c.get("/one"); err != nil {
		t.Fatal(err)
	}
	onLoops(t, s, 1)
	c.closedByServer(t, 5*time.Second)
	onLoops(t, s, 0)
}

// TestTLSOnTheLoopsShutdown: at Shutdown the TLS connections idle on the
// loops close at once, while a request in flight on one finishes, told
// Connection: close.
func TestTLSOnTheLoopsShutdown(t *testing.T) {
	loopsOnly(t)
	arrived, release := make(chan struct{}), make(chan struct{})
	s, _, cfg := tlsServerFor(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		io.WriteString(w, "ok "+r.URL.Path)
	}), proxy.Options{}, EngineLoops)
	// A failure before the release must not leave the backend waiting:
	// its Close, a cleanup registered before this one, waits for it.
	var releaseOnce sync.Once
	releaseSlow := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseSlow)
	idle := make([]*parkClient, 3)
	for i := range idle {
		idle[i] = dialPark(t, s, cfg)
		if err := idle[i].get("/warm"); err != nil {
			t.Fatal(err)
		}
	}
	busy := dialPark(t, s, cfg)
	if err := busy.get("/warm"); err != nil {
		t.Fatal(err)
	}
	onLoops(t, s, 4)
	io.WriteString(busy.c, "GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()
	for _, c := range idle {
		c.closedByServer(t, 5*time.Second)
	}
	onLoops(t, s, 1)
	releaseSlow()
	readClosing(t, busy.br, "the request in flight at Shutdown", "ok /slow")
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	onLoops(t, s, 0)
}
