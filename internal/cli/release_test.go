package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/provider/docker"
	"github.com/cutover/cutover/internal/provider/docker/dockertest"
	"github.com/cutover/cutover/internal/release"
	"github.com/cutover/cutover/internal/serve"
	"github.com/cutover/cutover/internal/testutil/freeport"
)

// releaseCompose is one compose file for both colours: the colour's
// project runs two replicas that report the colour as their profile.
const releaseCompose = `version: "2.4"
services:
  web:
    image: %s
    scale: 2
    environment:
      - PROFILE=${CUTOVER_POOL:-blue}
    networks: [net]
networks:
  net:
    name: %s
    external: true
`

const releaseConfig = `listen: {http: "%s"}
state_dir: %s
log: {access: "off"}
docker: {network: %s}
services:
  web:
    health: {interval: 250ms, timeout: 1s, healthy: 2, unhealthy: 2}
    drain_timeout: 5s
    pools:
      blue:  {compose: {project: %[4]s-blue, service: web}, port: 8000}
      green: {compose: {project: %[4]s-green, service: web}, port: 8000}
    active: blue
`

// runCLI runs a cutover command in-process and returns its output and
// exit code.
func runReleaseCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	root := NewRoot(Streams{In: strings.NewReader(""), Out: &out, Err: &out})
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	err := root.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(&out, "cutover:", err)
		return out.String(), ExitCode(err)
	}
	return out.String(), 0
}

// TestReleaseOnDocker releases into the idle colour with docker compose
// on the real engine: a good version switches and stops the old colour;
// a broken one is refused with its logs, its containers are removed, and
// the live colour keeps serving.
func TestReleaseOnDocker(t *testing.T) {
	eng := dockertest.Engine(t)
	ctx := context.Background()
	compose, err := release.ComposeCommand(ctx, "")
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	prefix := dockertest.Prefix(t)
	dir, err := os.MkdirTemp("", "cutover-rel-") // short: it holds the admin socket
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := dockertest.GoBinary(t, "./cmd/demo-app", dir)
	dockerfile := filepath.Join(dockertest.ModuleRoot(t), "build", "demo-app.Dockerfile")
	for _, v := range []string{"v1", "v2"} {
		dockertest.Image(t, eng, dockertest.ImageOptions{
			Dockerfile: dockerfile, Files: map[string]string{"demo-app": bin},
			Tag: prefix + "/demo-app:" + v, Args: map[string]string{"VERSION": v},
		})
	}
	// The broken version cannot listen and exits at once.
	broken := filepath.Join(dir, "broken.Dockerfile")
	if err := os.WriteFile(broken, []byte("FROM "+prefix+"/demo-app:v1\nCMD [\"-addr\", \"no-such-address\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dockertest.Image(t, eng, dockertest.ImageOptions{Dockerfile: broken, Tag: prefix + "/demo-app:broken"})
	net := dockertest.Network(t, eng, prefix+"-net")
	name := prefix + "-web"
	for _, colour := range []string{"blue", "green"} {
		dockertest.RemoveLabelledAtEnd(t, eng, docker.LabelProject+"="+name+"-"+colour)
	}

	composeFile := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(composeFile, []byte(fmt.Sprintf(releaseCompose, prefix+"/demo-app:v1", net.Name)), 0o644); err != nil {
		t.Fatal(err)
	}
	var upOut bytes.Buffer
	if err := release.RunCompose(ctx, compose, []string{"-p", name + "-blue", "-f", composeFile, "up", "-d"},
		append(os.Environ(), "CUTOVER_POOL=blue"), &upOut); err != nil {
		t.Fatalf("start blue: %v\n%s", err, upOut.String())
	}

	listen := freeport.For(t)
	cfgPath := filepath.Join(dir, "cutover.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(releaseConfig, listen, filepath.Join(dir, "state"), net.Name, name)), 0o600); err != nil {
		t.Fatal(err)
	}
	inst, err := serve.Start(ctx, serve.Options{
		ConfigPath: cfgPath, LookupEnv: os.LookupEnv, Stdout: io.Discard,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		inst.Shutdown(sctx)
	})
	socket := inst.Config().Admin.Socket
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	get := func() (profile, version string) {
		t.Helper()
		resp, err := client.Get("http://" + listen + "/")
		if err != nil {
			t.Fatalf("GET / through cutover: %v", err)
		}
		defer resp.Body.Close()
		var info struct{ Profile, Version string }
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&info) != nil {
			t.Fatalf("GET / through cutover: %s", resp.Status)
		}
		return info.Profile, info.Version
	}
	dockertest.Eventually(t, 30*time.Second, func() string {
		st, _ := inst.Manager().Status("web")
		for _, p := range st[0].Pools {
			if p.Name == "blue" && len(p.Targets) == 2 {
				return ""
			}
		}
		return "blue's two replicas are not in its pool yet"
	})
	if p, v := get(); p != "blue" || v != "v1" {
		t.Fatalf("before the release: profile %q version %q, want blue v1", p, v)
	}

	t.Run("the old colour is stopped by serve after --keep-old, unless rolled back to", func(t *testing.T) {
		load := startStrictLoad(listen)
		t.Cleanup(func() { load.stop() })
		running := func(colour string) (up, all int) {
			t.Helper()
			cs, err := eng.ComposeContainers(ctx, name+"-"+colour, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cs {
				if c.Running() {
					up++
				}
			}
			return up, len(cs)
		}
		blueStopsAt := func() *time.Time {
			st, _ := inst.Manager().Status("web")
			for _, p := range st[0].Pools {
				if p.Name == "blue" {
					return p.StopsAt
				}
			}
			return nil
		}

		// 1. The release returns right after the switch; blue's stop is
		// scheduled in serve; a rollback within the window keeps blue.
		out, code := runReleaseCLI(t, "release", "--socket", socket, "-f", composeFile, "--service", "web",
			"--image", prefix+"/demo-app:v2", "--name", name, "--keep-old", "3s")
		returned := time.Now()
		t.Logf("release output:\n%s", out)
		if code != 0 {
			t.Fatalf("release exited %d", code)
		}
		for _, want := range []string{"releasing into green as compose project " + name + "-green", "release start to switch:", "cutover serve stops blue at"} {
			if !strings.Contains(out, want) {
				t.Errorf("release output does not say %q", want)
			}
		}
		at := blueStopsAt()
		if at == nil || !at.After(returned) {
			t.Fatalf("when release returned (%s), status gives blue's stop at %v: want a time still to come", returned.Format("15:04:05.000"), at)
		}
		if p, v := get(); p != "green" || v != "v2" {
			t.Fatalf("after the release: profile %q version %q, want green v2", p, v)
		}
		out, code = runReleaseCLI(t, "rollback", "--socket", socket)
		if code != 0 {
			t.Fatalf("rollback within --keep-old exited %d:\n%s", code, out)
		}
		if at := blueStopsAt(); at != nil {
			t.Fatalf("blue is live again, but its stop at %s is still scheduled", at)
		}
		// Nothing announces a stop that does not happen: wait past the
		// time it had, then look.
		time.Sleep(time.Until(at.Add(2 * time.Second)))
		if up, all := running("blue"); up != 2 || all != 2 {
			t.Fatalf("after a rollback within --keep-old, %d of %d blue containers run, want 2 of 2", up, all)
		}
		if p, v := get(); p != "blue" || v != "v1" {
			t.Fatalf("after the rollback: profile %q version %q, want blue v1", p, v)
		}

		// 2. Released again (green is the warm rollback colour now):
		// serve stops blue ~3 s later, long after the CLI has exited.
		out, code = runReleaseCLI(t, "release", "--socket", socket, "-f", composeFile, "--service", "web",
			"--image", prefix+"/demo-app:v2", "--name", name, "--keep-old", "3s", "--replace-previous")
		returned = time.Now()
		t.Logf("release output:\n%s", out)
		if code != 0 {
			t.Fatalf("second release exited %d", code)
		}
		at = blueStopsAt()
		if at == nil || !at.After(returned) {
			t.Fatalf("when release returned (%s), status gives blue's stop at %v: want a time still to come", returned.Format("15:04:05.000"), at)
		}
		status, _ := runReleaseCLI(t, "status", "--socket", socket)
		if want := "blue stops at " + at.Local().Format("15:04:05"); !strings.Contains(status, want) {
			t.Errorf("cutover status does not say %q:\n%s", want, status)
		}
		if up, _ := running("blue"); up != 2 {
			t.Fatalf("%d blue containers run when release returned, want 2 (stopped before their time)", up)
		}
		dockertest.Eventually(t, 60*time.Second, func() string {
			if up, _ := running("blue"); up > 0 {
				return fmt.Sprintf("%d blue containers still run", up)
			}
			return ""
		})
		if time.Now().Before(*at) {
			t.Fatalf("blue stopped before its time %s", at.Format("15:04:05.000"))
		}
		// The stop's history entry ends once Docker has answered for every
		// container, a moment after they show as stopped.
		dockertest.Eventually(t, 30*time.Second, func() string {
			for _, e := range inst.Manager().History("web") {
				if e.Kind == "stop" && e.From == "blue" && e.Result == "succeeded" && strings.Contains(e.Reason, name+"-blue") {
					return ""
				}
			}
			return fmt.Sprintf("the history records no finished stop of blue's containers: %+v", inst.Manager().History("web"))
		})
		for range 10 {
			if p, v := get(); p != "green" || v != "v2" {
				t.Fatalf("after the release: profile %q version %q, want green v2", p, v)
			}
		}
		ok, failed := load.stop()
		t.Logf("strict load through both releases and the rollback: %d requests, %d failed", ok+failed, failed)
		if failed > 0 || ok == 0 {
			t.Fatalf("strict load: %d ok, %d failed (want some, none failed): %s", ok, failed, load.firstErr())
		}
	})

	t.Run("a broken version is refused, removed, and traffic stays", func(t *testing.T) {
		out, code := runReleaseCLI(t, "release", "--socket", socket, "-f", composeFile,
			"--image", prefix+"/demo-app:broken", "--name", name, "--timeout", "60s")
		t.Logf("release output:\n%s", out)
		if code != 1 {
			t.Fatalf("release exited %d, want 1", code)
		}
		for _, want := range []string{"releasing into blue", "did not start healthy", "last 20 log lines of", "cannot listen", "removed the new containers", "live traffic stays on green"} {
			if !strings.Contains(out, want) {
				t.Errorf("release output does not say %q", want)
			}
		}
		if p, v := get(); p != "green" || v != "v2" {
			t.Fatalf("after the refused release: profile %q version %q, want green v2", p, v)
		}
		blue, err := eng.ComposeContainers(ctx, name+"-blue", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range blue {
			if c.Running() || strings.Contains(c.Status, "exited with code 1") {
				t.Errorf("container %s (%s) of the refused release is still there", c.Name, c.Status)
			}
		}
	})

	t.Run("a canary release holds and keeps the old colour", func(t *testing.T) {
		out, code := runReleaseCLI(t, "release", "--socket", socket, "-f", composeFile,
			"--image", prefix+"/demo-app:v1", "--name", name, "--canary", "50", "--keep-old", "0")
		t.Logf("release output:\n%s", out)
		if code != 0 {
			t.Fatalf("canary release exited %d", code)
		}
		if !strings.Contains(out, "holds") || !strings.Contains(out, "green keeps running") {
			t.Errorf("release output does not say the canary holds and green keeps running")
		}
		st, _ := inst.Manager().Status("web")
		if st[0].Active != "green" || st[0].Canary != "blue" || st[0].CanaryPercent != 50 {
			t.Fatalf("after the canary release: active %s canary %q at %v%%", st[0].Active, st[0].Canary, st[0].CanaryPercent)
		}
		green, err := eng.ComposeContainers(ctx, name+"-green", nil)
		if err != nil || len(green) != 2 || !green[0].Running() || !green[1].Running() {
			t.Fatalf("green, the stable colour, must keep running during the canary: %v %v", green, err)
		}
		out, code = runReleaseCLI(t, "abort", "--socket", socket)
		if code != 0 {
			t.Fatalf("abort exited %d:\n%s", code, out)
		}
		if st, _ := inst.Manager().Status("web"); st[0].Canary != "" || st[0].Active != "green" {
			t.Fatalf("after abort: active %s canary %q", st[0].Active, st[0].Canary)
		}
	})

	t.Run("deploy --container sets a pool from containers", func(t *testing.T) {
		out, code := runReleaseCLI(t, "deploy", "green", "--socket", socket, "--container", "x:8000")
		if code != 2 || !strings.Contains(out, `pool "green" of service web already follows its Docker containers`) {
			t.Fatalf("deploy --container of a Docker pool: exit %d\n%s", code, out)
		}
		green, err := eng.ComposeContainers(ctx, name+"-green", nil)
		if err != nil || len(green) != 2 {
			t.Fatalf("green containers: %v %v", green, err)
		}
		out, code = runReleaseCLI(t, "deploy", "canary", "--socket", socket, "--container", green[0].Name+":8000", "--network", net.Name, "--timeout", "30s")
		t.Logf("deploy output:\n%s", out)
		if code != 0 {
			t.Fatalf("deploy canary --container exited %d", code)
		}
		addr, err := docker.Addr(green[0], net, 8000)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := inst.Manager().Status("web")
		if st[0].Active != "canary" || len(st[0].Pools) < 3 {
			t.Fatalf("active %q after deploy canary", st[0].Active)
		}
		for _, p := range st[0].Pools {
			if p.Name == "canary" && (len(p.Targets) != 1 || p.Targets[0].Addr != addr) {
				t.Fatalf("canary targets %+v, want %s", p.Targets, addr)
			}
		}
		_, code = runReleaseCLI(t, "deploy", "canary", "--socket", socket, "--container", "no-such-container-"+prefix+":8000")
		if code != 2 {
			t.Fatalf("deploy --container of a missing container exited %d, want 2", code)
		}
	})

	t.Run("deploy --container looks on every engine of docker.hosts", func(t *testing.T) {
		// The real engine, and one that does not answer (a socket path
		// nothing listens on).
		dead := "unix://" + filepath.Join(t.TempDir(), "no-engine.sock")
		cfgPath := filepath.Join(t.TempDir(), "cutover.yaml")
		body := fmt.Sprintf("listen: {http: \"127.0.0.1:1\"}\ndocker:\n  network: %s\n  hosts: [%q, %q]\nservices:\n  web:\n    pools:\n      blue: [\"127.0.0.1:1\"]\n", net.Name, eng.Host(), dead)
		if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		green, err := eng.ComposeContainers(ctx, name+"-green", nil)
		if err != nil || len(green) != 2 {
			t.Fatalf("green containers: %v %v", green, err)
		}
		out, code := runReleaseCLI(t, "deploy", "multi", "--socket", socket, "-c", cfgPath, "--container", green[1].Name+":8000", "--timeout", "30s")
		t.Logf("deploy output:\n%s", out)
		if code != 0 {
			t.Fatalf("deploy multi --container with docker.hosts exited %d", code)
		}
		if !strings.Contains(out, "warning: cannot reach the Docker Engine at "+dead) {
			t.Errorf("the output does not warn that %s was left out", dead)
		}
		addr, err := docker.Addr(green[1], net, 8000)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := inst.Manager().Status("web")
		if st[0].Active != "multi" {
			t.Fatalf("active %q after deploy multi", st[0].Active)
		}
		for _, p := range st[0].Pools {
			if p.Name == "multi" && (len(p.Targets) != 1 || p.Targets[0].Addr != addr) {
				t.Fatalf("multi targets %+v, want %s", p.Targets, addr)
			}
		}
		missing := "no-such-container-" + prefix
		out, code = runReleaseCLI(t, "deploy", "canary", "--socket", socket, "-c", cfgPath, "--container", missing+":8000")
		if code != 2 || !strings.Contains(out, "none on "+eng.Host()) || !strings.Contains(out, dead) || !strings.Contains(out, missing) {
			t.Fatalf("deploy --container of a container no engine has: exit %d, want 2 naming it and both engines:\n%s", code, out)
		}
		if st, _ := inst.Manager().Status("web"); st[0].Active != "multi" {
			t.Fatalf("the refused deploy switched to %q", st[0].Active)
		}
	})
}

// strictLoad is a few keep-alive clients sending GET / in a loop, each
// response read to its end; any error or non-200 counts as failed. It
// stops by itself after loadMax requests or loadFor.
type strictLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	first      string
	done       chan struct{}
	once       sync.Once
	wg         sync.WaitGroup
}

const (
	loadClients = 4
	loadMax     = 200_000
	loadFor     = 3 * time.Minute
)

func startStrictLoad(addr string) *strictLoad {
	l := &strictLoad{done: make(chan struct{})}
	end := time.Now().Add(loadFor)
	for range loadClients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &http.Client{Timeout: 10 * time.Second}
			defer c.CloseIdleConnections()
			for time.Now().Before(end) && l.ok.Load()+l.failed.Load() < loadMax {
				select {
				case <-l.done:
					return
				default:
				}
				resp, err := c.Get("http://" + addr + "/")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if l.first == "" {
						l.first = err.Error()
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

func (l *strictLoad) stop() (ok, failed int64) {
	l.once.Do(func() { close(l.done) })
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load()
}

func (l *strictLoad) firstErr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}
