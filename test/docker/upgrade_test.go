package docker_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/provider/docker/dockertest"
)

// TestUpgradeInContainer upgrades the binary of a running cutover
// container with no failed request: the new binary is copied into the
// container and `docker exec ... /cutover upgrade --binary` hands it the
// sockets; the container (whose PID 1 stays the first cutover, as its init)
// keeps running. For comparison it then measures what a plain `docker
// restart` costs the same strict clients.
func TestUpgradeInContainer(t *testing.T) {
	eng := dockertest.Engine(t)
	prefix := dockertest.Prefix(t)
	root := dockertest.ModuleRoot(t)
	dir, err := os.MkdirTemp("", "cutover-up-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := dockertest.GoBinary(t, "./cmd/cutover", dir)
	demo := dockertest.GoBinary(t, "./cmd/demo-app", dir)
	image := prefix + "/cutover:up"
	dockertest.Image(t, eng, dockertest.ImageOptions{
		Dockerfile: filepath.Join(root, "build", "cutover.Dockerfile"), Files: map[string]string{"cutover": bin}, Tag: image,
	})
	appImage := prefix + "/demo-app:up"
	dockertest.Image(t, eng, dockertest.ImageOptions{
		Dockerfile: filepath.Join(root, "build", "demo-app.Dockerfile"), Files: map[string]string{"demo-app": demo},
		Tag: appImage, Args: map[string]string{"VERSION": "v1"},
	})
	dockerCLI := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("docker", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	network := prefix + "-upnet"
	dockerCLI("network", "create", network)
	removeNetworkAtEnd(t, eng, network)
	app, proxy := prefix+"-upapp", prefix+"-upcutover"
	for _, c := range []string{app, proxy} {
		t.Cleanup(func() { exec.Command("docker", "rm", "-f", c).Run() })
	}
	dockerCLI("run", "-d", "--name", app, "--network", network, "-e", "PROFILE=blue-1", appImage)

	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(state, 0o777)
	cfg := filepath.Join(dir, "cutover.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen:
  http: ":80"
state_dir: /var/lib/cutover
log:
  access: "off"
services:
  web:
    health: {path: /healthz, interval: 100ms, timeout: 2s, healthy: 1, unhealthy: 3}
    drain_timeout: 5s
    pools:
      blue: ["%s:8000"]
`, app)), 0o644); err != nil {
		t.Fatal(err)
	}
	dockerCLI("run", "-d", "--name", proxy, "--network", network, "--user", fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
		"-p", "127.0.0.1::80", "-v", cfg+":/etc/cutover/cutover.yaml:ro", "-v", state+":/var/lib/cutover", image)
	addr := dockertest.PublishedPort(t, eng, proxy, 80)
	socket := filepath.Join(state, "admin.sock")
	pid := func() string {
		c := admin.NewUnixClient(socket)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		h, err := c.Health(ctx)
		if err != nil {
			return ""
		}
		return fmt.Sprint(h.PID)
	}
	dockertest.Eventually(t, 30*time.Second, func() string {
		if pid() == "" {
			return "cutover's admin API does not answer"
		}
		return ""
	})
	load := func(during func()) loadclient.Summary {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan *loadclient.Result, 1)
		go func() {
			res, err := loadclient.Run(ctx, loadclient.Options{Addr: addr, Connections: 32, Duration: 2 * time.Minute, Host: "app", Timeout: 10 * time.Second})
			if err != nil {
				t.Error(err)
			}
			done <- res
		}()
		during()
		cancel()
		res := <-done
		if res == nil {
			t.FailNow()
		}
		return res.Summarize()
	}

	first := pid()
	pids := []string{first}
	sum := load(func() {
		for i := 1; i <= 3; i++ {
			// A new file for each version: the running one cannot be
			// overwritten (text file busy).
			path := fmt.Sprintf("/cutover.v%d", i)
			dockerCLI("cp", bin, proxy+":"+path)
			out := dockerCLI("exec", proxy, "/cutover", "upgrade", "--binary", path, "--socket", "/var/lib/cutover/admin.sock")
			if !strings.Contains(out, "upgraded: pid") {
				t.Fatalf("docker exec cutover upgrade:\n%s", out)
			}
			now := pid()
			if now == "" || now == pids[len(pids)-1] {
				t.Fatalf("after upgrade %d the admin API is served by pid %q (before: %v)", i, now, pids)
			}
			pids = append(pids, now)
		}
	})
	if sum.Failed != 0 || sum.Requests == 0 {
		t.Fatalf("%d of %d requests failed across 3 in-container upgrades (%v)", sum.Failed, sum.Requests, sum.ErrorKinds)
	}
	if st := dockerCLI("inspect", "-f", "{{.State.Running}} {{.RestartCount}}", proxy); st != "true 0" {
		t.Fatalf("the container after the upgrades: running/restarts %q, want \"true 0\"", st)
	}
	t.Logf("3 upgrades inside the container (pids %v) under 32 strict clients: %d requests, %d failed", pids, sum.Requests, sum.Failed)

	// What a plain restart costs the same clients.
	restart := load(func() {
		dockerCLI("restart", proxy)
		dockertest.Eventually(t, 30*time.Second, func() string {
			if pid() == "" {
				return "cutover's admin API does not answer after docker restart"
			}
			return ""
		})
	})
	t.Logf("docker restart under 32 strict clients: %d requests, %d failed (%v)", restart.Requests, restart.Failed, restart.ErrorKinds)
}
