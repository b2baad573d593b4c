package listen

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/proxy"
)

// newProxy returns a proxy in front of one backend handler.
func newProxy(t *testing.T, h http.HandlerFunc) *proxy.Proxy {
	t.Helper()
	backend := httptest.NewServer(h)
	t.Cleanup(backend.Close)
	router, _ := webService(strings.TrimPrefix(backend.URL, "http://"))
	return proxy.New(proxy.Options{Router: router, Trusted: forward.NewTrusted(nil), Logger: quietLogger()})
}

// startServer runs a Server with HTTP and HTTPS (self-signed) in front of
// one backend handler.
func startServer(t *testing.T, h http.HandlerFunc) (*Server, *x509.Certificate) {
	t.Helper()
	px := newProxy(t, h)
	certs, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: []string{"localhost", "127.0.0.1"}, StateDir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s := runServer(t, Options{HTTP: "127.0.0.1:0", HTTPS: "127.0.0.1:0", TLS: certs.TLSConfig(), Proxy: px, Logger: quietLogger()})
	return s, certs.Leaf()
}

func tlsClient(leaf *x509.Certificate, h2 bool) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}, ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func TestHTTPSServesHTTP2AndHTTP1(t *testing.T) {
	s, leaf := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Proto", r.Header.Get("X-Forwarded-Proto"))
		w.Header().Set("X-Seen-Host", r.Host)
		io.WriteString(w, "hello "+r.URL.RequestURI())
	})
	for _, h2 := range []bool{true, false} {
		c := tlsClient(leaf, h2)
		url := "https://" + s.HTTPSAddr().String() + "/p?q=1"
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("h2=%v: %v", h2, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantProto := "HTTP/1.1"
		if h2 {
			wantProto = "HTTP/2.0"
		}
		if resp.Proto != wantProto {
			t.Errorf("h2=%v: proto %s, want %s", h2, resp.Proto, wantProto)
		}
		if resp.StatusCode != 200 || string(body) != "hello /p?q=1" {
			t.Errorf("h2=%v: %d %q", h2, resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-Seen-Proto"); got != "https" {
			t.Errorf("h2=%v: backend saw X-Forwarded-Proto %q", h2, got)
		}
		if got := resp.Header.Get("X-Seen-Host"); got != s.HTTPSAddr().String() {
			t.Errorf("h2=%v: backend saw Host %q", h2, got)
		}
	}
}

func TestHTTPRedirectsWhenHTTPSOn(t *testing.T) {
	s, _ := startServer(t, func(w http.ResponseWriter, r *http.Request) {})
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get("http://localhost:" + portOf(s.HTTPAddr()) + "/a%20b/c?x=1&y")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := "https://localhost:" + portOf(s.HTTPSAddr()) + "/a%20b/c?x=1&y"
	if resp.StatusCode != 308 || resp.Header.Get("Location") != want {
		t.Fatalf("got %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
}

func portOf(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

// TestShutdownLetsRequestsFinish: a request in flight at SIGTERM completes;
// an idle keep-alive connection is closed; new connections are refused.
// servePlain serves plain HTTP on 127.0.0.1 in front of px; the test
// shuts it down and then waits on served.
func servePlain(t *testing.T, px *proxy.Proxy) (*Server, chan error) {
	t.Helper()
	plain, err := New(Options{HTTP: "127.0.0.1:0", Proxy: px, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- plain.Serve() }()
	return plain, served
}

func TestShutdownLetsRequestsFinish(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	px := newProxy(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		io.WriteString(w, "done")
	})
	plain, served := servePlain(t, px)
	url := "http://" + plain.HTTPAddr().String()

	// An idle keep-alive connection.
	idle, err := net.Dial("tcp", plain.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	buf := make([]byte, 4096)
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(buf); err != nil {
		t.Fatal(err)
	}

	slow := getAsync(http.DefaultClient, url+"/slow")
	<-entered
	shut := shutdownAsync(plain)
	// The idle connection is closed by the shutdown.
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(buf); err == nil {
		t.Fatal("idle keep-alive connection still open after shutdown began")
	}
	// New connections are refused once the listener is closed.
	if c, err := net.DialTimeout("tcp", plain.HTTPAddr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("new connection accepted during shutdown")
	}
	close(release)
	if got := <-slow; got != "done" {
		t.Fatalf("request in flight at shutdown: %q, want it to complete", got)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	<-served
}

// TestDrainWaitsForAConnectionHandedOverDuringIt: the event loops hand a
// connection whose first request has a body to the goroutine engine; when
// that happens during a graceful Drain (an upgrade's old process), Drain
// returns only after that request's response, not as soon as the loops
// are empty (the old process would exit under it: in a container, where
// targets are named by host name, every first request is handed over).
func TestDrainWaitsForAConnectionHandedOverDuringIt(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	px := newProxy(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		close(entered)
		<-release
		io.WriteString(w, "done")
	})
	plain, served := servePlain(t, px)
	if plain.Loops() == 0 {
		t.Skip("no event loops on this system")
	}
	addr := plain.HTTPAddr().String()

	// A connection the loops hold, its first request not sent yet.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for plain.Counts().Conns[ConnKind{ListenerHTTP, ProtoHTTP1}] != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the event loops did not take the connection within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- plain.Drain(ctx, 5*time.Second)
	}()
	// The drain has begun once the listener refuses.
	for {
		d, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		d.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts 5s after Drain began")
		}
		time.Sleep(time.Millisecond)
	}
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
	<-entered
	// The request waits on its target: the drain must wait for it. A drain
	// that does not returns within milliseconds (the loops are empty now).
	select {
	case err := <-shut:
		close(release)
		t.Fatalf("Drain returned (%v) while a request handed over during it was in flight", err)
	case <-time.After(time.Second):
	}
	close(release)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	if resp := string(b); !strings.HasPrefix(resp, "HTTP/1.1 200") || !strings.HasSuffix(resp, "done") || !strings.Contains(strings.ToLower(resp), "connection: close") {
		t.Fatalf("the request handed over during the drain got %q, want 200 \"done\" with Connection: close", resp)
	}
	if err := <-shut; err != nil {
		t.Fatalf("drain: %v", err)
	}
	<-served
}
