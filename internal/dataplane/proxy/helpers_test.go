package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// backend is a real HTTP server answering with its name.
type backend struct {
	*httptest.Server
	name string
}

func newBackend(t *testing.T, name string, h http.HandlerFunc) *backend {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", name)
			io.WriteString(w, name)
		}
	}
	b := &backend{Server: httptest.NewServer(h), name: name}
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return strings.TrimPrefix(b.URL, "http://") }

// testService builds a service named name with one pool per entry of
// pools (pool name → backends), the first one active.
type poolSpec struct {
	name     string
	backends []*backend
}

func newService(name string, balance upstream.Balance, pools ...poolSpec) *route.Service {
	svc := route.NewService(name)
	for _, ps := range pools {
		p := upstream.NewPool(ps.name, balance)
		var specs []upstream.TargetSpec
		for _, b := range ps.backends {
			specs = append(specs, upstream.TargetSpec{Addr: b.addr(), Label: b.name})
		}
		p.SetTargets(specs, func(s upstream.TargetSpec) *upstream.Target {
			return upstream.NewTarget(upstream.TargetOptions{Addr: s.Addr, Label: s.Label, Initial: upstream.Up})
		})
		if svc.Active() == nil {
			svc.Apply(&route.Routes{Stable: p})
		}
	}
	return svc
}

// testEngine is the HTTP/1.1 engine startProxy serves plain connections
// with; TestMain runs the package's tests once with each engine.
var testEngine = engineLoops

const (
	engineLoops      = "loops"
	engineGoroutines = "goroutines"
)

func TestMain(m *testing.M) {
	code := 0
	for _, e := range []string{engineLoops, engineGoroutines} {
		if e == engineLoops && !proxy.LoopsSupported {
			continue
		}
		testEngine = e
		fmt.Printf("=== engine: %s (failures below this line are with this engine)\n", e)
		if c := m.Run(); c != 0 {
			code = c
		}
	}
	os.Exit(code)
}

// proxyServer runs a Proxy's HTTP/1.1 engine on a 127.0.0.1 listener:
// the event loops (which hand what they do not serve to the goroutine
// engine) or the goroutine engine alone, as testEngine says. TLS and
// redirecting listeners always use the goroutine engine, as listen.Server
// does.
type proxyServer struct {
	p     *proxy.Proxy
	ln    net.Listener
	addr  string
	wg    sync.WaitGroup
	loops *proxy.Loops
}

func startProxy(t testing.TB, o proxy.Options, info proxy.ConnInfo) *proxyServer {
	t.Helper()
	if o.Trusted == nil {
		o.Trusted = forward.NewTrusted(nil)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps := &proxyServer{p: proxy.New(o), ln: ln, addr: ln.Addr().String()}
	var conns sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	serve := func(c net.Conn, h *proxy.Handoff) {
		mu.Lock()
		open[c] = true
		mu.Unlock()
		conns.Add(1)
		go func() {
			defer conns.Done()
			if h != nil {
				ps.p.ServeHandoff(c, h, info)
			} else {
				ps.p.ServeConn(c, info)
			}
			mu.Lock()
			delete(open, c)
			mu.Unlock()
		}()
	}
	if testEngine == engineLoops && !info.TLS && !info.Redirect {
		ps.loops, err = ps.p.NewLoops(proxy.LoopOptions{Handoff: serve})
		if err != nil {
			t.Fatal(err)
		}
	}
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		defer func() {
			if ps.loops != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				ps.loops.Shutdown(ctx)
				cancel()
			}
			mu.Lock()
			for c := range open {
				c.Close()
			}
			mu.Unlock()
			conns.Wait()
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if ps.loops != nil {
				if err := ps.loops.Add(c); err != nil {
					t.Errorf("event loops refused a connection: %v", err)
					c.Close()
				}
				continue
			}
			serve(c, nil)
		}
	}()
	t.Cleanup(ps.stop)
	return ps
}

// stop closes the listener and waits until every connection's handler has
// returned (and so has logged its requests).
func (ps *proxyServer) stop() {
	ps.ln.Close()
	ps.wg.Wait()
}

func tableWith(svcs ...*route.Service) *route.Router {
	tbl := route.NewTable()
	for _, s := range svcs {
		tbl.Add(s, nil)
	}
	return route.NewRouter(tbl)
}

// rawResponse sends raw bytes on a new connection and reads one response
// (proxy.RawResponse).
func rawResponse(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	return proxy.RawResponse(t, addr, raw)
}

// rawRequest is rawResponse returning the status line and body.
func rawRequest(t *testing.T, addr, raw string) (status string, body string) {
	t.Helper()
	resp, b := rawResponse(t, addr, raw)
	return "HTTP/1.1 " + resp.Status, b
}

// client is a keep-alive HTTP client that never retries on its own,
// counting on the proxy alone for zero failures.
func strictClient() *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	return &http.Client{Transport: noRetry{tr}, Timeout: 10 * time.Second}
}

// noRetry turns a request into a non-replayable one, so net/http's
// Transport does not silently retry it on a new connection.
type noRetry struct{ tr *http.Transport }

func (n noRetry) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	// A body with no GetBody makes the request non-replayable.
	if r.Body == nil || r.Body == http.NoBody {
		r.Body = io.NopCloser(strings.NewReader(""))
		r.ContentLength = 0
		r.Header.Set("Content-Length", "0")
	}
	r.GetBody = nil
	return n.tr.RoundTrip(r)
}
