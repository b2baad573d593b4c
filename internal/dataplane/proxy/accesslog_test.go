package proxy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cutover/cutover/internal/dataplane/accesslog"
	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

func TestAccessLogCombined(t *testing.T) {
	b := newBackend(t, "blue-1", nil)
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := accesslog.New(accesslog.Options{Path: path, Format: "combined"})
	if err != nil {
		t.Fatal(err)
	}
	ps := startProxy(t, proxy.Options{Router: tableWith(svc), AccessLog: l}, proxy.ConnInfo{})
	rawRequest(t, ps.addr, "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nReferer: http://r/\r\nUser-Agent: test-agent\r\nX-Request-Id: rid-1\r\nConnection: close\r\n\r\n")
	rawRequest(t, ps.addr, "GET / HTTP/1.1\r\nX: y\r\n\r\n") // 400: no Host
	ps.stop()                                                // requests are logged after their response is sent
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), data)
	}
	want := regexp.MustCompile(`^127\.0\.0\.1 - - \[\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /a\?b=c HTTP/1\.1" 200 6 "http://r/" "test-agent" ` +
		`service=web pool=blue target=` + regexp.QuoteMeta(b.addr()) + ` upstream_status=200 duration=\d+\.\d{3} request_id=rid-1$`)
	// A request is logged after its response is sent, so the second
	// request's line may be written first.
	if strings.Contains(lines[0], `" 400 `) {
		lines[0], lines[1] = lines[1], lines[0]
	}
	if !want.MatchString(lines[0]) {
		t.Errorf("line %q does not match %s", lines[0], want)
	}
	if !strings.Contains(lines[1], `" 400 `) {
		t.Errorf("malformed request not logged with 400: %q", lines[1])
	}
}
