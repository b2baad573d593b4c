package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/upstream"
)

func TestProbe(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusNoContent)
		case "/redirect":
			http.Redirect(w, r, "/elsewhere-that-fails", http.StatusFound)
		case "/notfound":
			http.NotFound(w, r)
		case "/slow":
			<-release
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	defer close(release)
	addr := srv.Listener.Addr().String()
	p := NewProber()
	defer p.Close()
	ctx := context.Background()

	for path, want := range map[string]string{
		"/ok":       "",
		"/redirect": "", // 3xx passes and is not followed
		"/notfound": "GET /notfound answered 404 Not Found",
		"/boom":     "GET /boom answered 500 Internal Server Error",
		"/slow":     "GET /slow: no answer within 100ms",
	} {
		err := p.Probe(ctx, addr, path, 100*time.Millisecond)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("probe %s: %q, want %q", path, got, want)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	err = p.Probe(ctx, dead, "/healthz", time.Second)
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.HasPrefix(err.Error(), "GET /healthz: ") {
		t.Errorf("probe of a closed port: %v", err)
	}
}

func TestCheckerRestartJudgesAfresh(t *testing.T) {
	var probes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
	}))
	defer srv.Close()
	target := upstream.NewTarget(upstream.TargetOptions{Addr: srv.Listener.Addr().String()})
	notified := make(chan struct{}, 100)
	c := NewChecker(CheckerOptions{
		Target: target, Prober: NewProber(),
		Settings: func() Settings {
			return Settings{Path: "/healthz", Interval: time.Hour, Timeout: time.Second, Thresholds: upstream.Thresholds{Healthy: 1, Unhealthy: 1}}
		},
		Notify: func() { notified <- struct{}{} },
	})
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)

	// The first probe is sent at once, not after the (hour-long) interval.
	<-notified
	if target.State() != upstream.Up || target.ConsecutivePasses() != 1 {
		t.Fatalf("after the first probe: %v with %d passes", target.State(), target.ConsecutivePasses())
	}
	// Restart resets the count and probes at once again.
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	<-notified
	if n := target.ConsecutivePasses(); n != 1 {
		t.Fatalf("passes after a restart and one probe: %d, want 1", n)
	}
	if probes.Load() != 2 {
		t.Fatalf("%d probes, want 2", probes.Load())
	}
	cancel()
	<-c.Done()
	if err := c.Restart(context.Background()); err != ErrStopped {
		t.Fatalf("restart of a stopped checker: %v", err)
	}
}
