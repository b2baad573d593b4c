package docker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/provider/docker"
	"github.com/cutover/cutover/internal/provider/docker/dockertest"
	"github.com/cutover/cutover/internal/serve"
	"github.com/cutover/cutover/internal/testutil/freeport"
)

// fixture is a cutover serving two Docker pools on a test network: "named"
// (two containers by name) and "comp" (a compose service's replicas,
// made by setting compose's labels).
type fixture struct {
	t       *testing.T
	eng     *docker.Engine
	prefix  string
	image   string
	net     docker.Network
	cfgPath string
	listen  string
	oldAddr string // of container a before it stopped
	inst    *serve.Instance
	proxy   string // http://127.0.0.1:port
	client  *http.Client
}

func (f *fixture) name(s string) string { return f.prefix + "-" + s }

func (f *fixture) run(name string, labels map[string]string) string {
	return dockertest.Run(f.t, f.eng, dockertest.RunOptions{
		Name: f.name(name), Image: f.image, Network: f.net.Name, Labels: labels,
		Env: []string{"PROFILE=" + name},
	})
}

func composeLabels(project string) map[string]string {
	return map[string]string{docker.LabelProject: project, docker.LabelService: "web", docker.LabelOneOff: "False"}
}

const fixtureConfig = `
listen: {http: "%s"}
state_dir: %s
log: {access: "off"}
docker: {network: %s}
services:
  web:
    health: {interval: 250ms, timeout: 1s, healthy: 1, unhealthy: 2}
    drain_timeout: 15s
    pools:
      named: {containers: [%s, %s], port: 8000}
      comp: {compose: {project: %s, service: web}, port: 8000}
%s    active: named
`

func (f *fixture) writeConfig(extraPools string) {
	dir := filepath.Dir(f.cfgPath)
	body := fmt.Sprintf(fixtureConfig, f.listen, filepath.Join(dir, "state"), f.net.Name, f.name("a"), f.name("b"), f.name("proj"), extraPools)
	if err := os.WriteFile(f.cfgPath, []byte(body), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

func newFixture(t *testing.T) *fixture {
	eng := dockertest.Engine(t)
	f := &fixture{t: t, eng: eng, prefix: dockertest.Prefix(t), client: &http.Client{Timeout: 30 * time.Second}}
	t.Cleanup(f.client.CloseIdleConnections)
	dir := t.TempDir()
	f.image = demoImage(t, eng, f.prefix, dir)
	f.net = dockertest.Network(t, eng, f.name("net"))
	f.run("a", nil)
	f.run("b", nil)
	f.run("c1", composeLabels(f.name("proj")))
	f.run("c2", composeLabels(f.name("proj")))

	f.cfgPath = filepath.Join(dir, "cutover.yaml")
	f.listen = freeport.For(t)
	f.writeConfig("")
	var err error
	f.inst, err = serve.Start(context.Background(), serve.Options{
		ConfigPath: f.cfgPath, LookupEnv: os.LookupEnv, Stdout: io.Discard,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f.inst.Shutdown(ctx)
	})
	f.proxy = "http://" + f.inst.HTTPAddr().String()
	return f
}

// demoImage builds cmd/demo-app into an image tagged under prefix.
func demoImage(t *testing.T, eng *docker.Engine, prefix, dir string) string {
	bin := dockertest.GoBinary(t, "./cmd/demo-app", dir)
	image := prefix + "/demo-app:test"
	dockertest.Image(t, eng, dockertest.ImageOptions{
		Dockerfile: filepath.Join(dockertest.ModuleRoot(t), "build", "demo-app.Dockerfile"),
		Files:      map[string]string{"demo-app": bin}, Tag: image, Args: map[string]string{"VERSION": "test"},
	})
	return image
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// members returns "label=addr" of a pool's targets, sorted.
func (f *fixture) members(pool string) []string {
	st, err := f.inst.Manager().Status("web")
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, p := range st[0].Pools {
		if p.Name != pool {
			continue
		}
		for _, tg := range p.Targets {
			out = append(out, tg.Label+"="+tg.Addr)
		}
	}
	slices.Sort(out)
	return out
}

func (f *fixture) inspect(name string) docker.Container {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := f.eng.Inspect(ctx, f.name(name))
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// want is the "label=addr" of running containers on the test network.
func (f *fixture) want(names ...string) []string {
	var out []string
	for _, n := range names {
		c := f.inspect(n)
		addr, err := docker.Addr(c, f.net, 8000)
		if err != nil {
			f.t.Fatal(err)
		}
		out = append(out, c.Name+"="+addr)
	}
	slices.Sort(out)
	return out
}

// waitMembers waits until the pool's members are exactly those running
// containers, as they are now.
func (f *fixture) waitMembers(t *testing.T, pool string, within time.Duration, names ...string) time.Duration {
	t.Helper()
	return dockertest.Eventually(t, within, func() string {
		want, have := f.want(names...), f.members(pool)
		if slices.Equal(want, have) {
			return ""
		}
		return fmt.Sprintf("pool %s has %v, want %v", pool, have, want)
	})
}

func (f *fixture) waitDockerHealth(t *testing.T, name, want string, within time.Duration) {
	t.Helper()
	dockertest.Eventually(t, within, func() string {
		if c := f.inspect(name); c.Health != want {
			return fmt.Sprintf("container %s health is %q, want %q", c.Name, c.Health, want)
		}
		return ""
	})
}

func (f *fixture) get(url string) (int, string, error) {
	resp, err := f.client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var info struct {
		Profile string `json:"profile"`
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", err
	}
	_ = json.Unmarshal(body, &info)
	return resp.StatusCode, info.Profile, nil
}

// TestProviderFollowsEngine runs cutover in-process against the real
// engine and changes containers under it: every change reaches the pool
// within about a second, health and stop signals included.
func TestProviderFollowsEngine(t *testing.T) {
	f := newFixture(t)
	for _, n := range []string{"a", "b", "c1", "c2"} {
		f.waitDockerHealth(t, n, docker.HealthHealthy, 30*time.Second)
	}
	f.waitMembers(t, "named", 2*time.Second, "a", "b")
	f.waitMembers(t, "comp", 2*time.Second, "c1", "c2")

	t.Run("traffic reaches the containers", func(t *testing.T) {
		seen := map[string]bool{}
		for range 20 {
			code, profile, err := f.get(f.proxy + "/")
			if err != nil || code != 200 {
				t.Fatalf("GET / through cutover: %d %v", code, err)
			}
			seen[profile] = true
		}
		if !seen["a"] || !seen["b"] || len(seen) != 2 {
			t.Fatalf("profiles seen: %v, want a and b", seen)
		}
	})

	t.Run("a starting replica takes no traffic until Docker says healthy", func(t *testing.T) {
		f.run("c3", composeLabels(f.name("proj")))
		sawStarting := false
		for {
			c := f.inspect("c3")
			if c.Health == docker.HealthHealthy {
				break
			}
			if c.Health == docker.HealthStarting {
				sawStarting = true
				for _, m := range f.members("comp") {
					if strings.HasPrefix(m, c.Name+"=") {
						t.Fatalf("container %s is in the pool while Docker says %q", c.Name, c.Health)
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		took := f.waitMembers(t, "comp", 2*time.Second, "c1", "c2", "c3")
		t.Logf("replica in the pool %s after Docker said healthy (saw starting: %v)", took, sawStarting)
	})

	t.Run("a stopping container leaves its pool before it exits; its requests finish", func(t *testing.T) {
		// Slow requests keep both containers busy, so a stays running
		// while it lets them finish after its stop signal.
		var wg sync.WaitGroup
		var okSlow, badSlow atomic.Int64
		for range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, _, err := f.get(f.proxy + "/slow?ms=2500")
				if err != nil || code != 200 {
					t.Errorf("slow request: %d %v", code, err)
					badSlow.Add(1)
					return
				}
				okSlow.Add(1)
			}()
		}
		dockertest.Eventually(t, 5*time.Second, func() string {
			if n := f.inspectInFlight(); n < 6 {
				return fmt.Sprintf("%d slow requests in flight, want 6", n)
			}
			return ""
		})
		stopped := make(chan error, 1)
		a := f.inspect("a")
		f.oldAddr = a.Networks[f.net.Name].IP
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			stopped <- f.eng.Stop(ctx, a.ID, nil)
		}()
		var stillRunning bool
		took := dockertest.Eventually(t, 2*time.Second, func() string {
			for _, m := range f.members("named") {
				if strings.HasPrefix(m, a.Name+"=") {
					return "container a is still in the pool after docker stop"
				}
			}
			stillRunning = f.inspect("a").Running()
			return ""
		})
		if !stillRunning {
			t.Errorf("container a had exited when it left the pool; it should leave at its stop signal, while it finishes its requests")
		}
		t.Logf("stopping container left the pool %s after docker stop (still running then: %v)", took, stillRunning)
		// New requests meanwhile go to b only, and none fails.
		for range 30 {
			code, profile, err := f.get(f.proxy + "/")
			if err != nil || code != 200 || profile != "b" {
				t.Fatalf("GET / while a stops: %d %q %v, want 200 from b", code, profile, err)
			}
		}
		wg.Wait()
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		if badSlow.Load() != 0 || okSlow.Load() != 6 {
			t.Fatalf("slow requests: %d ok, %d failed", okSlow.Load(), badSlow.Load())
		}
	})

	t.Run("a container restarted with a new address is followed", func(t *testing.T) {
		old := f.inspect("a")
		oldAddr := f.oldAddr
		// While a is stopped, another container takes the free address,
		// so a comes back with a new one — as happens when containers
		// come and go between a stop and a start.
		f.run("hold", nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := f.eng.Client().ContainerStart(ctx, old.ID, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		f.waitDockerHealth(t, "a", docker.HealthHealthy, 30*time.Second)
		took := f.waitMembers(t, "named", 2*time.Second, "a", "b")
		newAddr := f.inspect("a").Networks[f.net.Name].IP
		t.Logf("address %s → %s; pool followed %s after Docker said healthy", oldAddr, newAddr, took)
		if newAddr == oldAddr {
			t.Errorf("container a came back at its old address %s; the test wants a new one", oldAddr)
		}
	})

	t.Run("an unhealthy container takes no traffic", func(t *testing.T) {
		a := f.inspect("a")
		addr, _ := docker.Addr(a, f.net, 8000)
		post := func(ok bool) {
			resp, err := f.client.Post(fmt.Sprintf("http://%s/admin/health?ok=%v", addr, ok), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		post(false)
		f.waitDockerHealth(t, "a", docker.HealthUnhealthy, 15*time.Second)
		f.waitMembers(t, "named", 2*time.Second, "b")
		post(true)
		f.waitDockerHealth(t, "a", docker.HealthHealthy, 15*time.Second)
		f.waitMembers(t, "named", 2*time.Second, "a", "b")
	})

	t.Run("network disconnect and connect", func(t *testing.T) {
		b := f.inspect("b")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := f.eng.Client().NetworkDisconnect(ctx, f.net.ID, b.ID, false); err != nil {
			t.Fatal(err)
		}
		dockertest.Eventually(t, 2*time.Second, func() string {
			for _, m := range f.members("named") {
				if strings.HasPrefix(m, b.Name+"=") {
					return "b is still in the pool after leaving the network"
				}
			}
			return ""
		})
		if err := f.eng.Client().NetworkConnect(ctx, f.net.ID, b.ID, &network.EndpointSettings{}); err != nil {
			t.Fatal(err)
		}
		f.waitMembers(t, "named", 2*time.Second, "a", "b")
	})

	t.Run("a removed replica leaves the compose pool", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := f.eng.Remove(ctx, f.name("c2")); err != nil {
			t.Fatal(err)
		}
		f.waitMembers(t, "comp", 2*time.Second, "c1", "c3")
	})

	t.Run("reload adds a pool that follows containers", func(t *testing.T) {
		f.writeConfig(fmt.Sprintf("      extra: {containers: [%s], port: 8000}\n", f.name("hold")))
		if err := f.inst.Reload(); err != nil {
			t.Fatal(err)
		}
		f.waitMembers(t, "extra", 2*time.Second, "hold")
	})

	t.Run("problems name the container and the fix", func(t *testing.T) {
		other := dockertest.Network(t, f.eng, f.name("other"))
		dockertest.Run(t, f.eng, dockertest.RunOptions{Name: f.name("off"), Image: f.image, Network: other.Name})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		list, err := f.eng.List(ctx, filters.NewArgs())
		if err != nil {
			t.Fatal(err)
		}
		res := docker.Resolve(docker.PoolRef{Service: "web", Pool: "p", Containers: []string{f.name("nope"), f.name("off")}, Port: 8000},
			list, f.net, nil)
		text := strings.Join(res.Problems, "\n")
		for _, want := range []string{
			`no container "` + f.name("nope") + `" exists`,
			`container "` + f.name("off") + `" is not attached to network "` + f.net.Name + `"`,
			"docker network connect " + f.net.Name + " " + f.name("off"),
		} {
			if !strings.Contains(text, want) {
				t.Errorf("problems do not say %q:\n%s", want, text)
			}
		}
		if len(res.Targets) != 0 {
			t.Errorf("targets %v, want none", res.Targets)
		}
	})
}

// inspectInFlight is the number of requests in flight on the named pool.
func (f *fixture) inspectInFlight() int64 {
	st, err := f.inst.Manager().Status("web")
	if err != nil {
		f.t.Fatal(err)
	}
	for _, p := range st[0].Pools {
		if p.Name == "named" {
			return p.InFlight
		}
	}
	return 0
}

func TestStartErrorsSayWhatToDo(t *testing.T) {
	eng := dockertest.Engine(t)
	prefix := dockertest.Prefix(t)
	load := func(network, host string) *config.Config {
		body := fmt.Sprintf(`
listen: {http: "127.0.0.1:1"}
docker: {network: %s, host: %q}
services:
  web:
    pools:
      blue: {containers: [x], port: 8000}
`, network, host)
		cfg, err := config.Parse([]byte(body), "test.yaml", os.LookupEnv)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	ctx := context.Background()

	_, err := docker.Start(ctx, docker.Options{Config: load("bridge", "unix:///nonexistent/docker.sock"), Sink: nopSink{}})
	if err == nil || !strings.Contains(err.Error(), "cannot reach the Docker Engine at unix:///nonexistent/docker.sock") ||
		!strings.Contains(err.Error(), "DOCKER_HOST") {
		t.Errorf("unreachable engine: %v", err)
	}

	_, err = docker.Start(ctx, docker.Options{Config: load(prefix+"-missing", ""), Sink: nopSink{}})
	if err == nil || !strings.Contains(err.Error(), "docker network create "+prefix+"-missing") {
		t.Errorf("missing network: %v", err)
	}

	// A container given on the command line without a port, whose image
	// exposes none.
	dir := t.TempDir()
	bin := dockertest.GoBinary(t, "./cmd/demo-app", dir)
	image := prefix + "/plain:test"
	df := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(df, []byte("FROM scratch\nCOPY demo-app /demo-app\nENTRYPOINT [\"/demo-app\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dockertest.Image(t, eng, dockertest.ImageOptions{Dockerfile: df, Files: map[string]string{"demo-app": bin}, Tag: image})
	n := dockertest.Network(t, eng, prefix+"-net")
	dockertest.Run(t, eng, dockertest.RunOptions{Name: prefix + "-noport", Image: image, Network: n.Name})
	_, _, err = eng.ContainerTarget(ctx, prefix+"-noport", n.Name)
	if err == nil || !strings.Contains(err.Error(), "no port known") || !strings.Contains(err.Error(), prefix+"-noport:PORT") {
		t.Errorf("no port: %v", err)
	}
	addr, name, err := eng.ContainerTarget(ctx, prefix+"-noport:8000", "")
	if err != nil || name != prefix+"-noport" || !strings.HasSuffix(addr, ":8000") {
		t.Errorf("NAME:PORT on the only network: %q %q %v", addr, name, err)
	}
	_, _, err = eng.ContainerTarget(ctx, prefix+"-absent:8000", n.Name)
	if err == nil || !strings.Contains(err.Error(), `no container "`+prefix+`-absent" exists`) {
		t.Errorf("missing container: %v", err)
	}
}

type nopSink struct{}

func (nopSink) SetTargets(string, string, []upstream.TargetSpec) error { return nil }
