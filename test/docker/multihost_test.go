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

// mhProxy is one of the example's two cutover containers, seen from the
// test: its admin socket (in the state folder mounted from the host) and
// its published port.
type mhProxy struct {
	name      string // "a" or "b"
	container string
	socket    string
	addr      string
}

func (p mhProxy) status(t *testing.T) (*admin.StatusResponse, error) {
	c := admin.NewUnixClient(p.socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.Status(ctx, "web")
}

// active is the proxy's live pool and whether it shows itself stale
// ("" when its admin API does not answer yet).
func (p mhProxy) active(t *testing.T) (pool string, stale bool, st *admin.StatusResponse) {
	st, err := p.status(t)
	if err != nil || len(st.Services) != 1 || st.Store == nil {
		return "", false, st
	}
	return st.Services[0].Active, st.Store.Stale, st
}

func (p mhProxy) deploy(t *testing.T, pool string) {
	t.Helper()
	c := admin.NewUnixClient(p.socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	if _, err := c.Deploy(ctx, admin.DeployRequest{Service: "web", Pool: pool, Timeout: admin.Duration(30 * time.Second)}, nil); err != nil {
		t.Fatalf("deploy %s through proxy %s: %v", pool, p.name, err)
	}
}

// window: every request sent at or after from and answered by until must
// come from profile.
type window struct {
	what        string
	from, until time.Time
	profile     string
}

// TestMultiHostExample runs examples/multi-host on the real engine: a
// three-member etcd cluster (the image FROM scratch around
// cmd/etcd-for-examples), two cutovers on two "host" networks sharing
// their state through it, and each host's blue and green app. Under a
// strict load client through each proxy: a deploy through A switches both;
// then A is disconnected from the etcd network, a deploy through B goes on
// without it while A shows stale and keeps serving its last state; once
// reconnected A converges. No request fails through either proxy.
func TestMultiHostExample(t *testing.T) {
	eng := dockertest.Engine(t)
	compose := composeCommand(t)
	prefix := dockertest.Prefix(t)
	root := dockertest.ModuleRoot(t)
	dir, err := os.MkdirTemp("", "cutover-mh-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	bin := dockertest.GoBinary(t, "./cmd/cutover", dir)
	demo := dockertest.GoBinary(t, "./cmd/demo-app", dir)
	etcd := dockertest.GoBinary(t, "./cmd/etcd-for-examples", dir)
	proxyImage, etcdImage, appRepo := prefix+"/cutover:mh", prefix+"/etcd:mh", prefix+"/demo-app"
	dockertest.Image(t, eng, dockertest.ImageOptions{Dockerfile: filepath.Join(root, "build", "cutover.Dockerfile"), Files: map[string]string{"cutover": bin}, Tag: proxyImage})
	dockertest.Image(t, eng, dockertest.ImageOptions{Dockerfile: filepath.Join(root, "build", "etcd.Dockerfile"), Files: map[string]string{"etcd": etcd}, Tag: etcdImage})
	for _, v := range []string{"v1", "v2"} {
		dockertest.Image(t, eng, dockertest.ImageOptions{
			Dockerfile: filepath.Join(root, "build", "demo-app.Dockerfile"), Files: map[string]string{"demo-app": demo},
			Tag: appRepo + ":" + v, Args: map[string]string{"VERSION": v},
		})
	}

	states := map[string]string{}
	for _, h := range []string{"a", "b"} {
		states[h] = filepath.Join(dir, "state-"+h)
		if err := os.Mkdir(states[h], 0o777); err != nil {
			t.Fatal(err)
		}
		os.Chmod(states[h], 0o777)
	}
	project := prefix + "-mh"
	env := append(os.Environ(),
		"PREFIX="+prefix, "PROXY_IMAGE="+proxyImage, "ETCD_IMAGE="+etcdImage, "DEMO_APP_REPO="+appRepo,
		"A_PORT=", "B_PORT=", "A_STATE="+states["a"], "B_STATE="+states["b"],
		fmt.Sprintf("CUTOVER_USER=%d:%d", os.Getuid(), os.Getgid()))
	run := func(name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// Cleanups run last-in first-out: containers go before their networks.
	etcdNet := prefix + "-etcd"
	for _, n := range []string{etcdNet, prefix + "-host-a", prefix + "-host-b"} {
		removeNetworkAtEnd(t, eng, n)
	}
	dockertest.RemoveLabelledAtEnd(t, eng, "com.docker.compose.project="+project)
	run(compose[0], append(compose[1:], "-p", project, "-f", filepath.Join(root, "examples", "multi-host", "compose.yaml"), "up", "-d")...)

	var a, b mhProxy
	for _, p := range []*mhProxy{&a, &b} {
		h := "a"
		if p == &b {
			h = "b"
		}
		*p = mhProxy{name: h, container: prefix + "-cutover-" + h, socket: filepath.Join(states[h], "admin.sock")}
		p.addr = dockertest.PublishedPort(t, eng, p.container, 80)
	}
	proxies := []mhProxy{a, b}
	// Both up, fresh, each seeing the other, blue live.
	dockertest.Eventually(t, 60*time.Second, func() string {
		for _, p := range proxies {
			pool, stale, st := p.active(t)
			if pool != "blue" || stale || len(st.Store.Instances) != 2 {
				return fmt.Sprintf("proxy %s: active %q, stale %v, store %+v", p.name, pool, stale, st)
			}
		}
		return ""
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make([]chan *loadclient.Result, len(proxies))
	for i, p := range proxies {
		results[i] = make(chan *loadclient.Result, 1)
		go func() {
			res, err := loadclient.Run(ctx, loadclient.Options{
				Addr: p.addr, Connections: 4, Duration: 2 * time.Minute, Host: "app",
				BackendHeader: "X-Profile", Timeout: 10 * time.Second,
			})
			if err != nil {
				t.Error(err)
			}
			results[i] <- res
		}()
	}
	windows := map[string][]window{}
	await := func(p mhProxy, what string, within time.Duration, ok func(pool string, stale bool) bool) time.Time {
		t.Helper()
		dockertest.Eventually(t, within, func() string {
			pool, stale, _ := p.active(t)
			if !ok(pool, stale) {
				return fmt.Sprintf("proxy %s: %s; active %q, stale %v", p.name, what, pool, stale)
			}
			return ""
		})
		return time.Now()
	}
	settle := func() { time.Sleep(time.Second) } // load keeps running between steps

	// 1. A deploy through A switches both.
	settle()
	a.deploy(t, "green")
	aGreen := time.Now()
	bGreen := await(b, "green live after the deploy through A", 10*time.Second, func(pool string, stale bool) bool { return pool == "green" })
	t.Logf("deploy green through A: B applied it %s after A's deploy returned", bGreen.Sub(aGreen).Round(time.Millisecond))
	settle()

	// 2. A loses etcd: it shows stale and keeps serving green, while a
	// deploy through B (which waits for A's instance lease to end) switches
	// B to blue.
	cut := time.Now()
	run("docker", "network", "disconnect", etcdNet, a.container)
	windows["a"] = append(windows["a"], window{"green through A, live until the cut", aGreen, cut, "a-green"})
	windows["b"] = append(windows["b"], window{"green through B after the first deploy", bGreen, cut, "b-green"})
	staleAt := await(a, "stale after the disconnect", 20*time.Second, func(pool string, stale bool) bool { return stale && pool == "green" })
	b.deploy(t, "blue")
	bBlue := time.Now()
	t.Logf("proxy A showed stale %s after the disconnect; the deploy of blue through B took %s (it waits for A's instance lease to end)",
		staleAt.Sub(cut).Round(time.Millisecond), bBlue.Sub(staleAt).Round(time.Millisecond))
	settle()
	if pool, stale, _ := a.active(t); pool != "green" || !stale {
		t.Fatalf("proxy A while cut off: active %q, stale %v; want green, stale", pool, stale)
	}
	reconnect := time.Now()
	windows["a"] = append(windows["a"], window{"A's last state (green) while cut off", cut, reconnect, "a-green"})

	// 3. Reconnected, A converges on blue.
	run("docker", "network", "connect", etcdNet, a.container)
	aBlue := await(a, "blue and fresh after the reconnect", 20*time.Second, func(pool string, stale bool) bool { return pool == "blue" && !stale })
	converge := aBlue.Sub(reconnect)
	t.Logf("proxy A converged %s after `docker network connect`", converge.Round(time.Millisecond))
	settle()
	end := time.Now()
	windows["a"] = append(windows["a"], window{"blue through A after converging", aBlue, end, "a-blue"})
	windows["b"] = append(windows["b"], window{"blue through B after the deploy through B", bBlue, end, "b-blue"})
	cancel()

	for i, p := range proxies {
		res := <-results[i]
		if res == nil {
			t.Fatalf("proxy %s: no load result", p.name)
		}
		sum := res.Summarize()
		t.Logf("proxy %s: %d requests, %d failed %v, by profile %v", p.name, sum.Requests, sum.Failed, sum.ErrorKinds, sum.ByBackend)
		if sum.Failed != 0 || sum.Requests == 0 {
			t.Errorf("proxy %s: %d of %d requests failed (%v)", p.name, sum.Failed, sum.Requests, sum.ErrorKinds)
		}
		for prof := range sum.ByBackend {
			if !strings.HasPrefix(prof, p.name+"-") {
				t.Errorf("proxy %s: a response came from %q, an app of another host", p.name, prof)
			}
		}
		for _, w := range windows[p.name] {
			checked, wrong, example := 0, 0, ""
			for _, r := range res.Records {
				sent, done := res.Start.Add(r.Sent), res.Start.Add(r.Done)
				if sent.Before(w.from) || done.After(w.until) || r.Err != "" {
					continue
				}
				checked++
				if r.Backend != w.profile {
					wrong++
					example = r.Backend
				}
			}
			if checked == 0 || wrong > 0 {
				t.Errorf("proxy %s, %s: %d of %d responses came from elsewhere than %s (e.g. %q)", p.name, w.what, wrong, checked, w.profile, example)
			}
		}
	}
}
