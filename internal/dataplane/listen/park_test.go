package listen

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/proxy"
)

// bigBodyLen is the length of what tlsHTTP1Server's backend answers /big
// with, "x" repeated: several reads and writes.
const bigBodyLen = 20000

// parkServer is tlsHTTP1Server with the proxy's ParkAfter and IdleTimeout
// set, where connections park.
func parkServer(t *testing.T, parkAfter, idle time.Duration) (*Server, *proxy.Proxy, *tls.Config) {
	t.Helper()
	if !proxy.ParkSupported {
		t.Skip("connections park only where epoll is (Linux)")
	}
	return tlsHTTP1Server(t, proxy.Options{ParkAfter: parkAfter, IdleTimeout: idle}, EngineGoroutines)
}

// tlsHTTP1Server runs an HTTPS server whose HTTP/1.1 engine is engine,
// with a proxy made with o (its router, trust and logger filled in) in
// front of a backend that answers "ok PATH", bigBodyLen bytes for /big and
// a POST with its body, and says in X-Got-Proto what X-Forwarded-Proto it
// got; it returns the server, its proxy and a client configuration for
// HTTP/1.1.
func tlsHTTP1Server(t *testing.T, o proxy.Options, engine string) (*Server, *proxy.Proxy, *tls.Config) {
	t.Helper()
	return tlsServerFor(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Got-Proto", r.Header.Get("X-Forwarded-Proto"))
		switch {
		case r.Method == "POST":
			// All of it first: net/http ends a request body once its
			// response has begun.
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		case r.URL.Path == "/big":
			io.WriteString(w, strings.Repeat("x", bigBodyLen))
		default:
			io.WriteString(w, "ok "+r.URL.Path)
		}
	}), o, engine)
}

// tlsServerFor is tlsHTTP1Server in front of backend.
func tlsServerFor(t *testing.T, backend http.Handler, o proxy.Options, engine string) (*Server, *proxy.Proxy, *tls.Config) {
	t.Helper()
	bs := httptest.NewServer(backend)
	t.Cleanup(bs.Close)
	o.Router, _ = webService(strings.TrimPrefix(bs.URL, "http://"))
	o.Trusted, o.Logger = forward.NewTrusted(nil), quietLogger()
	px := proxy.New(o)
	certs, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: []string{"localhost"}, StateDir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s := runServer(t, Options{HTTPS: "127.0.0.1:0", TLS: certs.TLSConfig(), Proxy: px, Engine: engine, Logger: quietLogger()})
	cfg := clientConfig(certs.Leaf())
	cfg.NextProtos = []string{"http/1.1"}
	return s, px, cfg
}

// parkClient is one keep-alive HTTP/1.1-over-TLS client connection.
type parkClient struct {
	c  *tls.Conn
	br *bufio.Reader
}

func dialPark(t *testing.T, s *Server, cfg *tls.Config) *parkClient {
	t.Helper()
	c := dialTLS(t, s.HTTPSAddr().String(), cfg)
	return &parkClient{c: c, br: bufio.NewReader(c)}
}

// get sends GET for each path at once (pipelined when more than one) and
// checks every response; an error says which failed and how.
func (pc *parkClient) get(paths ...string) error {
	pc.c.SetDeadline(time.Now().Add(20 * time.Second))
	var raw strings.Builder
	for _, p := range paths {
		raw.WriteString("GET " + p + " HTTP/1.1\r\nHost: localhost\r\n\r\n")
	}
	if _, err := io.WriteString(pc.c, raw.String()); err != nil {
		return fmt.Errorf("writing %v: %w", paths, err)
	}
	for _, p := range paths {
		resp, err := http.ReadResponse(pc.br, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		got, err := io.ReadAll(resp.Body)
		want := "ok " + p
		if p == "/big" {
			want = strings.Repeat("x", bigBodyLen)
		}
		if err != nil || resp.StatusCode != 200 || string(got) != want {
			return fmt.Errorf("%s: status %d, %d bytes (%v), want 200 and %q", p, resp.StatusCode, len(got), err, want[:min(len(want), 20)])
		}
		if resp.Close {
			return fmt.Errorf("%s: the response says Connection: close", p)
		}
	}
	return nil
}

// closedByServer waits for the server to close pc's connection; it fails
// the test if within limit the connection neither ends nor errs.
func (pc *parkClient) closedByServer(t *testing.T, limit time.Duration) {
	t.Helper()
	pc.c.SetReadDeadline(time.Now().Add(limit))
	var b [1]byte
	n, err := pc.br.Read(b[:])
	var ne net.Error
	if n > 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server did not close a parked connection within %v: read %d bytes, %v", limit, n, err)
	}
}

// readClosing reads a response from br and fails the test, saying what it
// was, unless it is a 200 with body want that says Connection: close.
func readClosing(t *testing.T, br *bufio.Reader, what, want string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(got) != want || !resp.Close {
		t.Fatalf("%s: %d %q, Connection: close %v; want 200, %q and true", what, resp.StatusCode, got, resp.Close, want)
	}
}

// waitFor polls cond until it holds; it fails the test, saying what, after
// limit.
func waitFor(t *testing.T, limit time.Duration, what func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, msg := what()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitParked(t *testing.T, px *proxy.Proxy, want int64) {
	t.Helper()
	waitFor(t, 20*time.Second, func() (bool, string) {
		n, _ := px.Parked()
		return n == want, fmt.Sprintf("%d connections parked, want %d", n, want)
	})
}

func httpsConns(s *Server) int {
	return s.Counts().Conns[ConnKind{ListenerHTTPS, ProtoHTTP1}]
}

// TestIdleTLSConnectionsParkWithoutGoroutines: HTTP/1.1-over-TLS
// connections idle after a request each end their goroutines (which
// hold the 8 KiB stacks serving grew), stay open and counted, serve their
// next request correctly when it comes, and Shutdown closes them.
func TestIdleTLSConnectionsParkWithoutGoroutines(t *testing.T) {
	s, px, cfg := parkServer(t, 50*time.Millisecond, time.Minute)
	const n = 500
	base := runtime.NumGoroutine()
	clients := make([]*parkClient, n)
	for i := range clients {
		clients[i] = dialPark(t, s, cfg)
		if err := clients[i].get(fmt.Sprintf("/c%d/first", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitParked(t, px, n)
	// Without parking, each connection holds its goroutine: n more.
	if d := runtime.NumGoroutine() - base; d > n/10 {
		t.Fatalf("%d idle TLS connections parked, but %d goroutines more than before them; want at most %d", n, d, n/10)
	}
	if got := httpsConns(s); got != n {
		t.Fatalf("Counts: %d HTTPS HTTP/1.1 connections, want the %d parked", got, n)
	}
	if r, w := px.Held(); r != 0 || w != 0 {
		t.Fatalf("parked connections hold %d read buffers and %d request states, want none", r, w)
	}

	// Each resumes for its next request, a pipelined pair for some, and a
	// large response for others.
	for i, pc := range clients {
		paths := []string{fmt.Sprintf("/c%d/second", i)}
		switch i % 3 {
		case 1:
			paths = append(paths, paths[0]+"/again")
		case 2:
			paths = append(paths, "/big")
		}
		if err := pc.get(paths...); err != nil {
			t.Fatalf("connection %d after parking: %v", i, err)
		}
	}
	waitParked(t, px, n)
	if _, total := px.Parked(); total < 2*n {
		t.Fatalf("%d parkings, want at least %d (each connection twice)", total, 2*n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with %d parked connections: %v", n, err)
	}
	allClosed(t, s, px, clients, "Shutdown")
}

// TestParkedTLSConnectionsCloseAtIdleTimeout: a parked connection is
// closed at its idle timeout, counted from its last response, not at the
// parking.
func TestParkedTLSConnectionsCloseAtIdleTimeout(t *testing.T) {
	const idle = 800 * time.Millisecond
	s, px, cfg := parkServer(t, 50*time.Millisecond, idle)
	const n = 40
	clients := make([]*parkClient, n)
	var answered time.Time
	for i := range clients {
		clients[i] = dialPark(t, s, cfg)
		if err := clients[i].get("/one"); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			answered = time.Now()
		}
	}
	waitParked(t, px, n)
	clients[0].closedByServer(t, 5*time.Second)
	if d := time.Since(answered); d < idle*7/8 {
		t.Fatalf("a parked connection was closed %v after its response, before the idle timeout %v", d, idle)
	}
	for _, pc := range clients[1:] {
		pc.closedByServer(t, 5*time.Second)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		now, _ := px.Parked()
		return now == 0 && httpsConns(s) == 0, fmt.Sprintf("%d parked, %d counted after the idle timeout", now, httpsConns(s))
	})
}

// TestDrainClosesParkedTLSConnections: a graceful Drain closes parked
// connections once idle for the grace, and answers a request that arrives
// on one before then, with Connection: close.
func TestDrainClosesParkedTLSConnections(t *testing.T) {
	s, px, cfg := parkServer(t, 30*time.Millisecond, time.Minute)
	const n = 20
	clients := make([]*parkClient, n)
	for i := range clients {
		clients[i] = dialPark(t, s, cfg)
		if err := clients[i].get("/one"); err != nil {
			t.Fatal(err)
		}
	}
	waitParked(t, px, n)
	drained := make(chan error, 1)
	const grace = 2 * time.Second
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- s.Drain(ctx, grace)
	}()
	// A request on a parked connection during the grace is served, and
	// told to close the connection.
	pc := clients[0]
	pc.c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(pc.c, "GET /late HTTP/1.1\r\nHost: localhost\r\n\r\n")
	readClosing(t, pc.br, "a request on a parked connection while draining", "ok /late")
	if err := <-drained; err != nil {
		t.Fatalf("Drain with parked connections: %v", err)
	}
	if d := time.Since(start); d < grace*3/4 {
		t.Fatalf("Drain closed parked connections after %v, before the grace of %v", d, grace)
	}
	allClosed(t, s, px, clients, "Drain")
}

// TestTLSKeepAliveAcrossParkingLosesNoRequest: keep-alive clients that
// alternate bursts of requests (single, pipelined, large responses) with
// pauses on both sides of ParkAfter get every response right, none
// refused or cut, while their connections park and resume under them.
func TestTLSKeepAliveAcrossParkingLosesNoRequest(t *testing.T) {
	const parkAfter = 30 * time.Millisecond
	s, px, cfg := parkServer(t, parkAfter, time.Minute)
	const conns, rounds = 40, 12
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		pc := dialPark(t, s, cfg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 12))
			for r := range rounds {
				for b := range 1 + rng.IntN(4) {
					paths := []string{fmt.Sprintf("/c%d/r%d/b%d", i, r, b)}
					switch rng.IntN(4) {
					case 1:
						paths = append(paths, paths[0]+"/again")
					case 2:
						paths = []string{"/big"}
					}
					if err := pc.get(paths...); err != nil {
						errs <- fmt.Errorf("connection %d, round %d: %w", i, r, err)
						return
					}
				}
				// Pauses from none to about three times ParkAfter: some
				// connections park, some are woken just as they do.
				time.Sleep(time.Duration(rng.IntN(int(3 * parkAfter))))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if _, total := px.Parked(); total < conns {
		t.Fatalf("only %d parkings over %d connections × %d pauses: the test did not exercise parking", total, conns, rounds)
	}
}

// allClosed checks that the server closed every client's connection and
// that none is left parked or counted, after what closed them.
func allClosed(t *testing.T, s *Server, px *proxy.Proxy, clients []*parkClient, after string) {
	t.Helper()
	for _, pc := range clients {
		pc.closedByServer(t, 5*time.Second)
	}
	if now, _ := px.Parked(); now != 0 || httpsConns(s) != 0 {
		t.Fatalf("after %s: %d parked, %d counted; want none", after, now, httpsConns(s))
	}
}
