package controlplane

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// backend is a real HTTP server on 127.0.0.1 whose health answer the test
// controls.
type backend struct {
	*httptest.Server
	name   string
	status atomic.Int32 // /healthz answer
	probes atomic.Int64
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	b.status.Store(http.StatusOK)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			b.probes.Add(1)
			w.WriteHeader(int(b.status.Load()))
			return
		}
		fmt.Fprint(w, name)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return b.Listener.Addr().String() }

// deadAddr returns a 127.0.0.1 address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// testConfig is a one-service configuration with fast health checks.
func testConfig(t *testing.T, dir string, blue, green []string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.Admin.Socket = dir + "/admin.sock"
	cfg.Listen.HTTP = "127.0.0.1:8080" // validated only; the control plane does not listen
	s := config.DefaultService("web")
	s.Health.Interval = 20 * time.Millisecond
	s.Health.Timeout = time.Second
	s.Health.Healthy = 2
	s.Health.Unhealthy = 2
	s.DrainTimeout = 10 * time.Second
	s.Pools = []config.Pool{{Name: "blue", Targets: blue}, {Name: "green", Targets: green}}
	s.Active = "blue"
	cfg.Services = []config.Service{s}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration invalid: %v", err)
	}
	return cfg
}

// startManager builds and starts a Manager, closed at the end of the test.
func startManager(t *testing.T, cfg *config.Config) *Manager {
	t.Helper()
	m, err := New(cfg, Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// livePool is the pool a request for any host is dispatched to now.
func livePool(t *testing.T, m *Manager) string {
	t.Helper()
	svc := m.Router().Table().Lookup([]byte("example.com"))
	if svc == nil {
		t.Fatal("no service for example.com")
	}
	p := svc.Acquire()
	if p == nil {
		t.Fatal("service has no active pool")
	}
	defer p.End()
	return p.Name()
}

// waitPool waits until cond holds, re-checking after every probe or
// target change of the pool; it fails the test after 10s.
func waitPool(t *testing.T, m *Manager, service, poolName string, cond func() bool) {
	t.Helper()
	m.mu.Lock()
	var p *pool
	for _, s := range m.services {
		if s.name == service {
			p = s.pools[poolName]
		}
	}
	m.mu.Unlock()
	if p == nil {
		t.Fatalf("no pool %s/%s", service, poolName)
	}
	deadline := time.After(10 * time.Second)
	for {
		wake := p.changed.Wait()
		if cond() {
			return
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("condition on pool %s/%s not met within 10s", service, poolName)
		}
	}
}

func poolOf(t *testing.T, m *Manager, service, name string) *upstream.Pool {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.serviceLocked(service)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := s.pools[name]
	if !ok {
		t.Fatalf("no pool %s/%s", service, name)
	}
	return p.up
}

func allUp(p *upstream.Pool) func() bool {
	return func() bool {
		ts := p.Targets()
		for _, t := range ts {
			if t.State() != upstream.Up {
				return false
			}
		}
		return len(ts) > 0
	}
}

func addrs(bs ...*backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.addr()
	}
	return out
}

// events collects progress events.
type events struct {
	ch chan admin.Event
}

func newEvents() *events { return &events{ch: make(chan admin.Event, 1024)} }

func (e *events) fn(ev admin.Event) {
	select {
	case e.ch <- ev:
	default:
	}
}

// waitPhase waits for an event of the phase whose message contains sub.
func (e *events) waitPhase(t *testing.T, phase string, match func(admin.Event) bool) admin.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-e.ch:
			if ev.Phase == phase && (match == nil || match(ev)) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event within 10s", phase)
		}
	}
}
