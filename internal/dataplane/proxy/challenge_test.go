package proxy_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// ACME HTTP-01 requests on a redirecting listener reach the challenge hook
// before the 308; everything else, and tokens the hook does not know, is
// redirected as before.
func TestACMEChallengeAnsweredBeforeRedirect(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	challenge := func(host, target string) (string, bool) {
		mu.Lock()
		asked = append(asked, host+" "+target)
		mu.Unlock()
		if host == "example.com" && target == "/.well-known/acme-challenge/tok-1" {
			return "tok-1.thumbprint", true
		}
		return "", false
	}
	ps := startProxy(t, proxy.Options{Router: tableWith(newService("web", upstream.RoundRobin))},
		proxy.ConnInfo{Redirect: true, HTTPSPort: "8443", Challenge: challenge})

	resp, body := rawResponse(t, ps.addr, "GET /.well-known/acme-challenge/tok-1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
	if resp.StatusCode != 200 || body != "tok-1.thumbprint" {
		t.Errorf("challenge: %d %q, want 200 with the key authorization", resp.StatusCode, body)
	}
	for _, req := range []string{
		"GET /.well-known/acme-challenge/unknown HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"POST /.well-known/acme-challenge/tok-1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n",
		"GET /.well-known/other HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
	} {
		resp, _ := rawResponse(t, ps.addr, req)
		if resp.StatusCode != 308 || !strings.HasPrefix(resp.Header.Get("Location"), "https://example.com:8443/") {
			t.Errorf("%q: %d %q, want the 308 redirect", req, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// The hook is asked for challenge GETs only, with the port stripped.
	want := []string{"example.com /.well-known/acme-challenge/tok-1", "example.com /.well-known/acme-challenge/unknown"}
	if strings.Join(asked, "|") != strings.Join(want, "|") {
		t.Errorf("hook asked %q, want %q", asked, want)
	}
}
