package proxy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// headerEcho answers with the request it received, as JSON.
type seen struct {
	Method  string
	URI     string
	Host    string
	Headers http.Header
	Body    string
}

func echoBackend(t *testing.T, name string) *backend {
	return newBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		json.NewEncoder(w).Encode(seen{Method: r.Method, URI: r.RequestURI, Host: r.Host, Headers: r.Header, Body: string(b)})
	})
}

func decodeSeen(t *testing.T, body string) seen {
	t.Helper()
	var s seen
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("backend reply %q: %v", body, err)
	}
	return s
}

func TestForwardingHeaders(t *testing.T) {
	b := echoBackend(t, "blue-1")
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})

	// An untrusted client claims another address: its claim is replaced.
	st, body := rawRequest(t, ps.addr, "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\n"+
		"X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n"+
		"Connection: close, X-Secret\r\nX-Secret: hop\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\nX-Custom: kept\r\nX_Forwarded_For: 7.7.7.7\r\n\r\n")
	if st != "HTTP/1.1 200 OK" {
		t.Fatalf("status %q", st)
	}
	s := decodeSeen(t, body)
	want := map[string]string{
		"X-Forwarded-For":   "127.0.0.1",
		"X-Real-Ip":         "127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "example.com:8080",
		"X-Custom":          "kept",
	}
	for k, v := range want {
		if got := s.Headers.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"X-Secret", "Keep-Alive", "Te", "Proxy-Connection", "X_forwarded_for", "X_Forwarded_For"} {
		if v, ok := s.Headers[k]; ok {
			t.Errorf("hop-by-hop %s forwarded: %q", k, v)
		}
	}
	if s.Host != "example.com:8080" {
		t.Errorf("Host = %q, want it preserved", s.Host)
	}
	if s.URI != "/a/b?x=1&y=%20" {
		t.Errorf("URI = %q", s.URI)
	}
	if id := s.Headers.Get("X-Request-Id"); len(id) != 32 {
		t.Errorf("X-Request-Id = %q, want a generated 32-hex id", id)
	}

	// An incoming request id is kept.
	_, body = rawRequest(t, ps.addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\nConnection: close\r\n\r\n")
	if got := decodeSeen(t, body).Headers.Get("X-Request-Id"); got != "abc-123" {
		t.Errorf("X-Request-Id = %q, want the incoming one", got)
	}
}

func TestTrustedProxyHeadersKept(t *testing.T) {
	b := echoBackend(t, "blue-1")
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	trusted := forward.NewTrusted([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc), Trusted: trusted}, proxy.ConnInfo{})
	_, body := rawRequest(t, ps.addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.7, 10.1.2.3\r\n"+
		"X-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\nConnection: close\r\n\r\n")
	s := decodeSeen(t, body)
	if got := s.Headers.Get("X-Forwarded-For"); got != "203.0.113.7, 10.1.2.3, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", got)
	}
	if got := s.Headers.Get("X-Real-Ip"); got != "203.0.113.7" {
		t.Errorf("X-Real-IP = %q, want the right-most untrusted address", got)
	}
	if got := s.Headers.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto = %q", got)
	}
	if got := s.Headers.Get("X-Forwarded-Host"); got != "shop.example" {
		t.Errorf("X-Forwarded-Host = %q", got)
	}
}

func TestRedirectToHTTPS(t *testing.T) {
	svc := newService("web", upstream.RoundRobin)
	cases := []struct {
		port, req, want string
	}{
		{"8443", "GET /a/b?q=1&r=%2F HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", "https://example.com:8443/a/b?q=1&r=%2F"},
		{"443", "GET /x?y HTTP/1.1\r\nHost: example.com\r\n\r\n", "https://example.com/x?y"},
		{"", "POST /form HTTP/1.1\r\nHost: Example.COM\r\nContent-Length: 0\r\n\r\n", "https://Example.COM/form"},
		{"8443", "GET /%7Euser//double?a=b&&c HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", "https://[::1]:8443/%7Euser//double?a=b&&c"},
	}
	for _, c := range cases {
		ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{Redirect: true, HTTPSPort: c.port})
		resp, _ := rawResponse(t, ps.addr, c.req)
		if resp.StatusCode != 308 {
			t.Fatalf("%q: status %d", c.req, resp.StatusCode)
		}
		if loc := resp.Header.Get("Location"); loc != c.want {
			t.Errorf("%q: Location = %q, want %q", c.req, loc, c.want)
		}
	}
}

func TestHostRouting(t *testing.T) {
	exact := newBackend(t, "exact", nil)
	wild := newBackend(t, "wild", nil)
	deeper := newBackend(t, "deeper", nil)
	def := newBackend(t, "default", nil)
	newTable := func() *route.Table {
		tbl := route.NewTable()
		tbl.Add(newService("exact", upstream.RoundRobin, poolSpec{"blue", []*backend{exact}}), []string{"example.com"})
		tbl.Add(newService("wild", upstream.RoundRobin, poolSpec{"blue", []*backend{wild}}), []string{"*.example.com"})
		tbl.Add(newService("deeper", upstream.RoundRobin, poolSpec{"blue", []*backend{deeper}}), []string{"*.api.example.com"})
		return tbl
	}
	router := route.NewRouter(newTable())
	ps := startProxy(t, proxy.Options{Router: router}, proxy.ConnInfo{})
	for host, want := range map[string]string{
		"example.com":        "exact",
		"EXAMPLE.com:80":     "exact",
		"example.com.":       "exact",
		"www.example.com":    "wild",
		"a.b.example.com":    "wild",
		"v1.api.example.com": "deeper",
	} {
		_, body := rawRequest(t, ps.addr, "GET / HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
		if body != want {
			t.Errorf("Host %s → %q, want %q", host, body, want)
		}
	}
	// No default service: an unknown host gets 404 from cutover.
	st, body := rawRequest(t, ps.addr, "GET / HTTP/1.1\r\nHost: other.org\r\nConnection: close\r\n\r\n")
	if st != "HTTP/1.1 404 Not Found" || !strings.Contains(body, "no service") {
		t.Errorf("unknown host: %q %q", st, body)
	}
	// With a default service, it goes there. A table is not changed once
	// installed: a new one is swapped in, as a reload does.
	withDefault := newTable()
	withDefault.Add(newService("default", upstream.RoundRobin, poolSpec{"blue", []*backend{def}}), nil)
	router.Swap(withDefault)
	_, body = rawRequest(t, ps.addr, "GET / HTTP/1.1\r\nHost: other.org\r\nConnection: close\r\n\r\n")
	if body != "default" {
		t.Errorf("unknown host with default service → %q", body)
	}
}

func TestBalanceRoundRobinAndLeastConn(t *testing.T) {
	b1, b2, b3 := newBackend(t, "b1", nil), newBackend(t, "b2", nil), newBackend(t, "b3", nil)
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b1, b2, b3}})
	ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})
	c := strictClient()
	counts := map[string]int{}
	for i := 0; i < 300; i++ {
		counts[get(t, c, "http://"+ps.addr+"/")]++
	}
	for _, n := range []string{"b1", "b2", "b3"} {
		if counts[n] != 100 {
			t.Errorf("round robin: %v, want 100 each", counts)
			break
		}
	}

	// least_conn: with a slow request holding b1, new requests avoid it.
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	slow := newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "slow")
	})
	// Released at the end, or by the cleanup when the test fails first
	// (before the backends close: their Close waits for the held request).
	var releaseOnce sync.Once
	unhold := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unhold)
	fast := newBackend(t, "fast", nil)
	lc := newService("lc", upstream.LeastConn, poolSpec{"blue", []*backend{slow, fast}})
	ps2 := startProxy(t, proxy.Options{Router: tableWith(lc)}, proxy.ConnInfo{})
	// Send /hold until one lands on "slow" (ties between idle targets go
	// round robin, so "fast" may take the first ones; it answers at once).
	done := make(chan string, 8)
	held := false
	for i := 0; i < 8 && !held; i++ {
		go func() { done <- get(t, strictClient(), "http://"+ps2.addr+"/hold") }()
		select {
		case <-entered:
			held = true
		case got := <-done:
			if got != "fast" {
				t.Fatalf("unexpected %q", got)
			}
		}
	}
	if !held {
		t.Fatal("no /hold request reached the slow target in 8 tries")
	}
	pool, _ := lc.Pool("blue")
	var fastTarget *upstream.Target
	for _, tg := range pool.Targets() {
		if tg.Addr() == fast.addr() {
			fastTarget = tg
		}
	}
	for i := 0; i < 20; i++ {
		// The last answer may reach the client a moment before its request
		// ends on the target: until then the targets tie.
		waitFor(t, func() bool { return fastTarget.InFlight() == 0 })
		if got := get(t, c, "http://"+ps2.addr+"/"); got != "fast" {
			t.Fatalf("least_conn sent a request to the busy target (%q)", got)
		}
	}
	unhold()
	<-done
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}
