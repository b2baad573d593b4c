package docker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/provider/docker"
	"github.com/cutover/cutover/internal/provider/docker/dockertest"
	"github.com/cutover/cutover/internal/serve"
	"github.com/cutover/cutover/internal/testutil/freeport"
)

// relay is a TCP listener on 127.0.0.1 whose connections are copied to a
// Unix socket: the local engine reached a second way, standing in for a
// second engine. Down ends every connection through it and drops new ones
// until Up, as an engine that goes away and comes back would; Close ends it.
type relay struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]bool
	down  bool
	wg    sync.WaitGroup
}

func startRelay(t *testing.T, socket string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, conns: map[net.Conn]bool{}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() { defer r.wg.Done(); r.pipe(c, socket) }()
		}
	}()
	t.Cleanup(r.Close)
	return r
}

// track registers c; it reports false (and closes c) once the relay is closed.
func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil || r.down {
		c.Close()
		return false
	}
	r.conns[c] = true
	return true
}

func (r *relay) pipe(c net.Conn, socket string) {
	if !r.track(c) {
		return
	}
	u, err := net.Dial("unix", socket)
	if err != nil {
		c.Close()
		return
	}
	if !r.track(u) {
		c.Close()
		return
	}
	done := make(chan struct{}, 2)
	copyTo := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go copyTo(u, c)
	go copyTo(c, u)
	<-done
	c.Close()
	u.Close()
	<-done
}

func (r *relay) Addr() string { return "tcp://" + r.ln.Addr().String() }

func (r *relay) Down() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = true
	for c := range r.conns {
		c.Close()
		delete(r.conns, c)
	}
}

func (r *relay) Up() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = false
}

func (r *relay) Close() {
	r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
}

// TestSeveralEngines follows the local engine as two (its socket, and a
// TCP relay to it): the pool takes its containers through both, keeps
// serving through the socket when the relay goes away, takes them through
// the relay again when it is back, and a config giving docker.host and
// docker.hosts is refused.
func TestSeveralEngines(t *testing.T) {
	eng := dockertest.Engine(t)
	socket, ok := strings.CutPrefix(eng.Host(), "unix://")
	if !ok {
		t.Skipf("the Docker Engine is at %s, not on a Unix socket this test can relay to", eng.Host())
	}
	prefix := dockertest.Prefix(t)
	dir := t.TempDir()
	image := demoImage(t, eng, prefix, dir)
	n := dockertest.Network(t, eng, prefix+"-net")
	for _, name := range []string{"a", "b"} {
		dockertest.Run(t, eng, dockertest.RunOptions{Name: prefix + "-" + name, Image: image, Network: n.Name, Env: []string{"PROFILE=" + name}})
	}
	rl := startRelay(t, socket)
	unix := "unix://" + socket

	cfgPath := filepath.Join(dir, "cutover.yaml")
	write := func(docker string) {
		body := fmt.Sprintf(`
listen: {http: "%s"}
state_dir: %s
log: {access: "off"}
%s
services:
  web:
    health: {interval: 250ms, timeout: 1s, healthy: 1, unhealthy: 2}
    drain_timeout: 5s
    pools:
      named: {containers: [%s-a, %s-b], port: 8000}
`, freeport.For(t), filepath.Join(dir, "state"), docker, prefix, prefix)
		if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))

	t.Run("docker.host and docker.hosts together are refused", func(t *testing.T) {
		write(fmt.Sprintf("docker:\n  network: %s\n  host: %s\n  hosts: [%q, %q]", n.Name, unix, rl.Addr(), unix))
		inst, err := serve.Start(context.Background(), serve.Options{ConfigPath: cfgPath, LookupEnv: os.LookupEnv, Stdout: io.Discard, Logger: logger})
		if err == nil {
			inst.Shutdown(context.Background())
			t.Fatal("serve started with both docker.host and docker.hosts")
		}
		if !strings.Contains(err.Error(), "cutover.yaml:8") || !strings.Contains(err.Error(), "docker.hosts") || !strings.Contains(err.Error(), "exclusive") {
			t.Fatalf("error does not name the line and say the keys are exclusive: %v", err)
		}
	})

	// The relay comes first, so while it answers the targets carry its label.
	write(fmt.Sprintf("docker:\n  network: %s\n  hosts: [%q, %q]", n.Name, rl.Addr(), unix))
	inst, err := serve.Start(context.Background(), serve.Options{ConfigPath: cfgPath, LookupEnv: os.LookupEnv, Stdout: io.Discard, Logger: logger})
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		inst.Shutdown(ctx)
	})
	f := &fixture{t: t, eng: eng, prefix: prefix, net: n, inst: inst}
	want := func(host string) []string {
		out := f.want("a", "b")
		for i, m := range out {
			name, addr, _ := strings.Cut(m, "=")
			out[i] = name + "@" + host + "=" + addr
		}
		return out
	}
	waitPool := func(host string, within time.Duration) {
		t.Helper()
		dockertest.Eventually(t, within, func() string {
			if w, have := want(host), f.members("named"); !slices.Equal(w, have) {
				return fmt.Sprintf("pool has %v, want %v", have, w)
			}
			return ""
		})
	}
	waitPool(rl.Addr(), 30*time.Second)
	dockertest.Eventually(t, 30*time.Second, func() string {
		st, err := inst.Manager().Status("web")
		if err != nil {
			return err.Error()
		}
		for _, p := range st[0].Pools {
			for _, tg := range p.Targets {
				if tg.State != upstream.Up.String() {
					return fmt.Sprintf("target %s is %s", tg.Label, tg.State)
				}
			}
		}
		return ""
	})

	// A strict client under keep-alive load, bounded in count and time,
	// while one engine goes away.
	proxy := "http://" + inst.HTTPAddr().String() + "/"
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	var ok200, failed atomic.Int64
	var profiles sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000 && time.Now().Before(deadline); i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(proxy)
				if err != nil {
					failed.Add(1)
					t.Errorf("GET through cutover: %v", err)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Errorf("GET through cutover: %d %v", resp.StatusCode, err)
					continue
				}
				ok200.Add(1)
				var info struct {
					Profile string `json:"profile"`
				}
				if json.Unmarshal(body, &info) == nil {
					profiles.Store(info.Profile, true)
				}
			}
		}()
	}
	awaitServed := func(n int64) {
		t.Helper()
		dockertest.Eventually(t, 20*time.Second, func() string {
			if got := ok200.Load(); got < n {
				return fmt.Sprintf("%d requests served, want %d", got, n)
			}
			return ""
		})
	}
	awaitServed(200)
	rl.Down()
	took := dockertest.Eventually(t, 10*time.Second, func() string {
		if w, have := want(unix), f.members("named"); !slices.Equal(w, have) {
			return fmt.Sprintf("pool has %v, want %v", have, w)
		}
		return ""
	})
	t.Logf("pool on the socket alone %s after the relay went down", took)
	awaitServed(ok200.Load() + 200)
	rl.Up()
	// The event stream reconnects with back-off (at most 5s between tries).
	took = dockertest.Eventually(t, 15*time.Second, func() string {
		if w, have := want(rl.Addr()), f.members("named"); !slices.Equal(w, have) {
			return fmt.Sprintf("pool has %v, want %v", have, w)
		}
		return ""
	})
	t.Logf("pool through the relay again %s after it came back", took)
	awaitServed(ok200.Load() + 200)
	rl.Close()
	close(stop)
	wg.Wait()
	for _, p := range []string{"a", "b"} {
		if _, ok := profiles.Load(p); !ok {
			t.Errorf("no response from container %s", p)
		}
	}
	t.Logf("%d requests served, %d failed", ok200.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}

	t.Run("an engine that does not answer at start is left out", func(t *testing.T) {
		// A socket path nothing listens on: unlike a closed TCP port, no
		// other test can take it over.
		dead := "unix://" + filepath.Join(t.TempDir(), "no-engine.sock")
		body := fmt.Sprintf(`
listen: {http: "127.0.0.1:1"}
docker: {network: %s, hosts: [%q, %q]}
services:
  web:
    pools:
      blue: {containers: [%s-a, %s-b], port: 8000}
`, n.Name, dead, unix, prefix, prefix)
		cfg, err := config.Parse([]byte(body), "test.yaml", os.LookupEnv)
		if err != nil {
			t.Fatal(err)
		}
		sink := &recordSink{}
		p, err := docker.Start(context.Background(), docker.Options{Config: cfg, Sink: sink, Logger: logger})
		if err != nil {
			t.Fatalf("start with one engine of two down: %v", err)
		}
		defer p.Close()
		got := sink.last("web", "blue")
		w := want(unix)
		if !slices.Equal(got, w) {
			t.Fatalf("targets %v, want %v", got, w)
		}

		cfg.Docker.Hosts = []string{dead}
		_, err = docker.Start(context.Background(), docker.Options{Config: cfg, Sink: sink, Logger: logger})
		var down *docker.UnreachableError
		if !errors.As(err, &down) {
			t.Fatalf("start with the only engine down: %v", err)
		}
	})
}

// recordSink keeps the targets last given for each pool.
type recordSink struct {
	mu   sync.Mutex
	pool map[string][]upstream.TargetSpec
}

func (s *recordSink) SetTargets(service, pool string, specs []upstream.TargetSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pool == nil {
		s.pool = map[string][]upstream.TargetSpec{}
	}
	s.pool[service+"/"+pool] = specs
	return nil
}

// last is "label=addr" of a pool's last targets, sorted.
func (s *recordSink) last(service, pool string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, t := range s.pool[service+"/"+pool] {
		out = append(out, t.Label+"="+t.Addr)
	}
	slices.Sort(out)
	return out
}
