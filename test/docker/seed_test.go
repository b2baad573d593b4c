// Package docker_test runs the seed's whole flow on the real Docker Engine,
// with the files of examples/seed: a network, the blue stack, cutover in a
// container on the network, blue live, a strict load client on the
// 127.0.0.1 published ports (plain and TLS), green up and deployed, a
// rollback, a release of a third version into the idle colour, a live
// container restarted (same address, then a new one), and a live replica
// stopped — with zero failed requests and the expected profile after each
// step. It skips, saying why, where no engine answers.
package docker_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/provider/docker"
	"github.com/cutover/cutover/internal/provider/docker/dockertest"
)

// Bounds of the load: per client, at most one request every pace, and no
// more than maxPerClient requests.
const (
	tlsClients   = 4
	plainClients = 1
	slowClients  = 1
	pace         = 5 * time.Millisecond
	maxPerClient = 100_000
	slowMS       = 300
	// dwellRequests are made after each step before the next one.
	dwellRequests = 300
)

// record is one request of the load.
type record struct {
	kind             string // "tls", "slow" or "plain"
	start, end       time.Time
	profile, version string
	err              string // "" when the request succeeded
}

// step is a point of the flow after which every new response must come
// from the expected profile set and version.
type step struct {
	name string
	// at is when the step's command had returned; until when the next
	// step's command began (zero: the end of the load).
	at, until time.Time
	profile   *regexp.Regexp
	version   string
}

type flow struct {
	t        *testing.T
	eng      *docker.Engine
	prefix   string
	seed     string
	env      []string
	compose  []string
	cutover  string // host binary
	socket   string
	tlsAddr  string
	httpAddr string
	steps    []step
	load     *load
}

func (f *flow) name(s string) string { return f.prefix + "-" + s }

// composeUp runs compose for one of the seed's files as its own project.
func (f *flow) composeUp(project, file string) {
	f.t.Helper()
	args := append(append([]string{}, f.compose[1:]...), "-p", project, "-f", filepath.Join(f.seed, file), "up", "-d")
	f.run(f.compose[0], args...)
}

// run runs a command with the flow's environment, failing the test on a
// non-zero exit; it returns the output.
func (f *flow) run(name string, args ...string) string {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = f.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		f.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// cli runs the cutover binary on the host against the container's socket.
func (f *flow) cli(args ...string) string {
	f.t.Helper()
	out := f.run(f.cutover, append(args, "--socket", f.socket)...)
	f.t.Logf("cutover %s:\n%s", strings.Join(args, " "), out)
	return out
}

// change marks that the next command may change where responses come
// from: the last step's window ends here.
func (f *flow) change() {
	if n := len(f.steps); n > 0 && f.steps[n-1].until.IsZero() {
		f.steps[n-1].until = time.Now()
	}
}

// expect marks that from now on responses come from profile/version,
// and lets the load run a while (when it runs) so the step is checked.
func (f *flow) expect(name, profile, version string) {
	f.change()
	f.steps = append(f.steps, step{name: name, at: time.Now(), profile: regexp.MustCompile(profile), version: version})
	if f.load != nil {
		f.load.waitRequests(dwellRequests, 30*time.Second)
	}
}

func (f *flow) inspect(name string) docker.Container {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := f.eng.Inspect(ctx, name)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// status is cutover's view of the service.
func (f *flow) status() admin.ServiceStatus {
	f.t.Helper()
	c := admin.NewUnixClient(f.socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx, "web")
	if err != nil {
		f.t.Fatal(err)
	}
	return st.Services[0]
}

// target returns the pool's target for a container, if listed.
func (f *flow) target(pool, container string) (admin.ServiceStatus, *targetView) {
	st := f.status()
	for _, p := range st.Pools {
		if p.Name != pool {
			continue
		}
		for _, t := range p.Targets {
			if t.Label == container {
				return st, &targetView{addr: t.Addr, state: t.State, served: t.Served}
			}
		}
	}
	return st, nil
}

type targetView struct {
	addr, state string
	served      uint64
}

// waitServing waits until the container is an up target of the pool at
// its current address and, with load running, has served a request there.
func (f *flow) waitServing(pool, name string, within time.Duration) string {
	return f.waitTarget(pool, name, within, true)
}

func (f *flow) waitTarget(pool, name string, within time.Duration, served bool) string {
	f.t.Helper()
	var addr string
	dockertest.Eventually(f.t, within, func() string {
		c := f.inspect(name)
		ep, ok := c.Networks[f.name("net")]
		if !ok || ep.IP == "" || c.Health != docker.HealthHealthy {
			return fmt.Sprintf("container %s: %s", name, c.Status)
		}
		_, tv := f.target(pool, name)
		switch {
		case tv == nil:
			return fmt.Sprintf("%s is not a target of pool %s", name, pool)
		case tv.addr != net.JoinHostPort(ep.IP, "8000"):
			return fmt.Sprintf("pool %s has %s at %s, the container is at %s", pool, name, tv.addr, ep.IP)
		case tv.state != "up" || (served && tv.served == 0):
			return fmt.Sprintf("%s at %s is %s and served %d", name, tv.addr, tv.state, tv.served)
		}
		addr = tv.addr
		return ""
	})
	return addr
}

// TestSeedFlowOnDocker is the seed's whole flow, under load.
func TestSeedFlowOnDocker(t *testing.T) {
	began := time.Now()
	eng := dockertest.Engine(t)
	compose := composeCommand(t)
	f := &flow{t: t, eng: eng, prefix: dockertest.Prefix(t), compose: compose}
	root := dockertest.ModuleRoot(t)
	f.seed = filepath.Join(root, "examples", "seed")
	dir, err := os.MkdirTemp("", "cutover-e2e-") // short: it holds the admin socket
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs last: the containers that wrote there
	// are gone by then.
	t.Cleanup(func() { os.RemoveAll(dir) })

	// Images, FROM scratch around the static binaries.
	f.cutover = dockertest.GoBinary(t, "./cmd/cutover", dir)
	demo := dockertest.GoBinary(t, "./cmd/demo-app", dir)
	cutoverImage := f.prefix + "/cutover:e2e"
	dockertest.Image(t, eng, dockertest.ImageOptions{
		Dockerfile: filepath.Join(root, "build", "cutover.Dockerfile"), Files: map[string]string{"cutover": f.cutover}, Tag: cutoverImage,
	})
	for _, v := range []string{"v1", "v2", "v3"} {
		dockertest.Image(t, eng, dockertest.ImageOptions{
			Dockerfile: filepath.Join(root, "build", "demo-app.Dockerfile"), Files: map[string]string{"demo-app": demo},
			Tag: f.prefix + "/demo-app:" + v, Args: map[string]string{"VERSION": v},
		})
	}
	t.Logf("images built at %s", time.Since(began).Round(time.Millisecond))

	// The mounted folders are made first, owned by the user cutover runs
	// as in its container (not root), so nothing is left root's.
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 65534, 65534 // nobody: cutover must not need root
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"state", "logs"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	dockerGID := "0"
	if fi, err := os.Stat("/var/run/docker.sock"); err == nil {
		dockerGID = fmt.Sprint(fi.Sys().(*syscall.Stat_t).Gid)
	}
	f.socket = filepath.Join(dir, "state", "admin.sock")
	f.env = append(os.Environ(),
		"PREFIX="+f.prefix, "NETWORK="+f.name("net"), "DEMO_APP_REPO="+f.prefix+"/demo-app",
		"PROXY_IMAGE="+cutoverImage, "CUTOVER_STATE_DIR="+filepath.Join(dir, "state"), "CUTOVER_LOG_DIR="+filepath.Join(dir, "logs"),
		fmt.Sprintf("CUTOVER_USER=%d:%d", uid, gid), "DOCKER_GID="+dockerGID,
		"HTTP_PORT=", "HTTPS_PORT=", "BIND=127.0.0.1", "NGINX_HOST=localhost", "CUTOVER_SOCKET=",
	)

	// 1. The network, with the seed's create_network.sh; a second copy
	// beside it (another NETWORK) must not clash over the subnet.
	for _, n := range []string{f.name("net"), f.name("net2")} {
		removeNetworkAtEnd(t, eng, n)
		env := f.env
		f.env = append(f.env, "NETWORK="+n)
		f.run("sh", filepath.Join(f.seed, "create_network.sh"))
		f.env = env
	}
	for _, project := range []string{"web-blue", "web-green", "proxy"} {
		dockertest.RemoveLabelledAtEnd(t, eng, docker.LabelProject+"="+f.name(project))
	}

	// 2. Blue. 3. cutover in a container on the network.
	f.composeUp(f.name("web-blue"), "compose-blue.yaml")
	f.composeUp(f.name("proxy"), "compose-cutover.yaml")
	proxy := f.name("cutover")
	f.httpAddr = dockertest.PublishedPort(t, eng, proxy, 80)
	f.tlsAddr = dockertest.PublishedPort(t, eng, proxy, 443)
	dockertest.Eventually(t, 30*time.Second, func() string {
		c := admin.NewUnixClient(f.socket)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := c.Health(ctx); err != nil {
			return fmt.Sprintf("cutover's admin API: %v", err)
		}
		return ""
	})

	// 4. The seed's `deploy.sh in`: blue is live.
	f.cli("deploy", "blue")
	f.waitTarget("blue", f.name("blue-server-1"), 30*time.Second, false)
	f.waitTarget("blue", f.name("blue-server-2"), 30*time.Second, false)
	f.expect("blue live", `^set1-server[12]$`, "v1")
	// The README's `cutover status -c cutover.yaml`, on the host: the
	// file's state_dir must lead to the socket of the container's.
	if out := f.run(f.cutover, "status", "-c", filepath.Join(f.seed, "cutover.yaml")); !strings.Contains(out, "web: active blue") {
		t.Errorf("cutover status -c cutover.yaml on the host:\n%s", out)
	}
	t.Logf("blue live at %s", time.Since(began).Round(time.Millisecond))

	f.load = startLoad(t, f.tlsAddr, f.httpAddr)
	f.load.waitRequests(dwellRequests, 30*time.Second)

	// 5. Green up. 6. `deploy.sh dp`.
	f.composeUp(f.name("web-green"), "compose-green.yaml")
	f.change()
	f.cli("deploy", "green")
	f.expect("deploy green", `^set2-server[12]$`, "v2")

	// 7. `deploy.sh rb`.
	f.change()
	f.cli("rollback")
	f.expect("rollback", `^set1-server[12]$`, "v1")

	// The release that replaces steps 5 and 6: a third version into the
	// idle colour, the old colour stopped after the drain. The idle colour
	// is green, still running v2 as the warm rollback colour: the release
	// is refused (nothing changes) until told to replace it.
	releaseArgs := []string{"release", "-f", filepath.Join(f.seed, "compose-{pool}.yaml"), "--image", f.prefix + "/demo-app:v3",
		"--name", f.name("web"), "--keep-old", "0", "--socket", f.socket}
	refused, err := exec.Command(f.cutover, releaseArgs...).CombinedOutput()
	if err == nil || !strings.Contains(string(refused), "warm rollback colour") || !strings.Contains(string(refused), "--replace-previous") {
		t.Fatalf("release into the warm rollback colour: %v\n%s\nwant a refusal naming it and --replace-previous", err, refused)
	}
	if c := f.inspect(f.name("green-server-1")); !c.Running() {
		t.Fatalf("the refused release stopped green-server-1")
	}
	f.change()
	out := f.cli(append(releaseArgs[:len(releaseArgs)-2], "--replace-previous")...)
	f.expect("release v3 into green", `^set2-server[12]$`, "v3")
	m := regexp.MustCompile(`release start to switch: ([0-9.]+m?s)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("release output does not give the time to the switch")
	}
	releaseToSwitch, _ := time.ParseDuration(m[1])
	for _, n := range []string{"blue-server-1", "blue-server-2"} {
		if c := f.inspect(f.name(n)); c.Running() {
			t.Errorf("%s still runs after release --keep-old 0", c.Name)
		}
	}
	green1, green2 := f.name("green-server-1"), f.name("green-server-2")
	f.waitServing("green", green1, 30*time.Second)
	f.waitServing("green", green2, 30*time.Second)

	// A live container restarts (docker restart: same address)...
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f.change()
	if err := eng.Client().ContainerRestart(ctx, green1, container.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitServing("green", green1, 30*time.Second)
	f.expect("restart of a live container", `^set2-server[12]$`, "v3")

	// ...and comes back with a new address, as when other containers
	// start while it is down: the proxy follows it.
	before := f.inspect(green1).Networks[f.name("net")].IP
	f.change()
	if err := eng.Stop(ctx, green1, nil); err != nil {
		t.Fatal(err)
	}
	dockertest.Run(t, eng, dockertest.RunOptions{Name: f.name("placeholder"), Image: f.prefix + "/demo-app:v1", Network: f.name("net")})
	if err := eng.Client().ContainerStart(ctx, green1, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	after := f.waitServing("green", green1, 30*time.Second)
	if host, _, _ := net.SplitHostPort(after); host == before {
		t.Errorf("%s came back at its old address %s; this step wants a new one", green1, before)
	}
	t.Logf("%s restarted: %s → %s", green1, before, after)
	f.expect("live container at a new address", `^set2-server[12]$`, "v3")

	// A live replica stops during load: drained, then gone.
	f.change()
	if err := eng.Stop(ctx, green2, nil); err != nil {
		t.Fatal(err)
	}
	if st, tv := f.target("green", green2); tv != nil || st.Active != "green" {
		t.Fatalf("after docker stop %s: active %s, target %+v", green2, st.Active, tv)
	}
	f.expect("live replica stopped", `^set2-server1$`, "v3")

	records := f.load.stop()
	end := time.Now()
	f.check(records)
	sent, failed := len(records), 0
	for _, r := range records {
		if r.err != "" {
			failed++
		}
	}
	// Nothing the container wrote is root's (unless the test runs as root's
	// own uid, which it does not ask for).
	for _, sub := range []string{"state", "logs"} {
		filepath.WalkDir(filepath.Join(dir, sub), func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if fi, err := d.Info(); err == nil && int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
				t.Errorf("%s is owned by uid %d; cutover runs as %d", path, fi.Sys().(*syscall.Stat_t).Uid, uid)
			}
			return nil
		})
	}
	t.Logf("seed flow on Docker: wall time %s (until the load stopped; cleanup follows), requests sent %d, failed %d, release start to switch %s",
		end.Sub(began).Round(time.Millisecond), sent, failed, releaseToSwitch)
}

// check asserts that no request failed and that each step's responses
// came from the expected replicas.
func (f *flow) check(records []record) {
	t := f.t
	byKind := map[string]int{}
	var failures []string
	for _, r := range records {
		byKind[r.kind]++
		if r.err != "" {
			failures = append(failures, fmt.Sprintf("%s %s request at %s: %s", r.kind, r.start.Format("15:04:05.000"), r.end.Sub(r.start).Round(time.Millisecond), r.err))
		}
	}
	t.Logf("requests: %v", byKind)
	if len(failures) > 0 {
		if len(failures) > 20 {
			failures = append(failures[:20], fmt.Sprintf("... and %d more", len(failures)-20))
		}
		t.Errorf("%d of %d requests failed:\n%s", len(failures), len(records), strings.Join(failures, "\n"))
	}
	for i, s := range f.steps {
		until := s.until
		if until.IsZero() {
			until = time.Now().Add(time.Hour)
		}
		checked, wrong := 0, 0
		var example string
		for _, r := range records {
			if r.kind == "plain" || r.err != "" || r.start.Before(s.at) || !r.start.Before(until) {
				continue
			}
			checked++
			if !s.profile.MatchString(r.profile) || r.version != s.version {
				wrong++
				example = fmt.Sprintf("%s/%s at %s", r.profile, r.version, r.start.Format("15:04:05.000"))
			}
		}
		t.Logf("after %q: %d responses checked", s.name, checked)
		if wrong > 0 {
			t.Errorf("after %q, %d of %d responses came from elsewhere than %s %s (e.g. %s)", s.name, wrong, checked, s.profile, s.version, example)
		}
		if checked == 0 && i > 0 {
			t.Errorf("after %q no response was checked", s.name)
		}
	}
}

// removeNetworkAtEnd removes a network a script made, also when the test
// fails.
func removeNetworkAtEnd(t *testing.T, eng *docker.Engine, name string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := eng.Client().NetworkRemove(ctx, name); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Errorf("remove network %s: %v", name, err)
		}
	})
}

func composeCommand(t *testing.T) []string {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	t.Skip("skipping: the seed flow needs `docker compose` or `docker-compose`, and neither is installed")
	return nil
}

// load runs the strict clients: no retries, every error and every
// unexpected status counted.
type load struct {
	stopCh  chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	records [][]record
	count   atomic.Int64
}

func startLoad(t *testing.T, tlsAddr, httpAddr string) *load {
	l := &load{stopCh: make(chan struct{})}
	add := func(kind string, do func(*rawClient) record, dial func() (net.Conn, error)) {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &rawClient{dial: dial}
			defer c.close()
			var recs []record
			defer func() {
				l.mu.Lock()
				l.records = append(l.records, recs)
				l.mu.Unlock()
			}()
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for range maxPerClient {
				select {
				case <-l.stopCh:
					return
				case <-tick.C:
				}
				r := do(c)
				r.kind = kind
				recs = append(recs, r)
				l.count.Add(1)
			}
		}()
	}
	dialTLS := func() (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", tlsAddr,
			&tls.Config{ServerName: "localhost", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) // self-signed
	}
	dialPlain := func() (net.Conn, error) { return net.DialTimeout("tcp", httpAddr, 5*time.Second) }
	for range tlsClients {
		add("tls", func(c *rawClient) record { return c.info("/") }, dialTLS)
	}
	for range slowClients {
		add("slow", func(c *rawClient) record { return c.info(fmt.Sprintf("/slow?ms=%d", slowMS)) }, dialTLS)
	}
	for range plainClients {
		add("plain", func(c *rawClient) record { return c.redirect("/a/b?c=d&e=%2F") }, dialPlain)
	}
	t.Cleanup(func() { l.stop() })
	return l
}

// waitRequests waits until n more requests have been made.
func (l *load) waitRequests(n int64, within time.Duration) {
	target := l.count.Load() + n
	deadline := time.Now().Add(within)
	for l.count.Load() < target && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *load) stop() []record {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	var all []record
	for _, rs := range l.records {
		all = append(all, rs...)
	}
	l.records = nil
	sort.Slice(all, func(i, j int) bool { return all[i].start.Before(all[j].start) })
	return all
}

// rawClient is one keep-alive HTTP/1.1 connection that never retries.
type rawClient struct {
	dial func() (net.Conn, error)
	conn net.Conn
	br   *bufio.Reader
}

func (c *rawClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// roundTrip sends one GET and reads the whole response; any error closes
// the connection (the next request dials anew) and is returned.
func (c *rawClient) roundTrip(path string) (*http.Response, []byte, error) {
	if c.conn == nil {
		conn, err := c.dial()
		if err != nil {
			return nil, nil, fmt.Errorf("connect: %w", err)
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
	}
	c.conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: cutover-e2e\r\n\r\n", path); err != nil {
		c.close()
		return nil, nil, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return nil, nil, fmt.Errorf("read response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.close()
		return nil, nil, fmt.Errorf("read body: %w", err)
	}
	if resp.Close {
		c.close()
	}
	return resp, body, nil
}

func (c *rawClient) info(path string) record {
	r := record{start: time.Now()}
	resp, body, err := c.roundTrip(path)
	r.end = time.Now()
	switch {
	case err != nil:
		r.err = err.Error()
	case resp.StatusCode != http.StatusOK:
		r.err = fmt.Sprintf("status %s: %s", resp.Status, bytes.TrimSpace(body))
	default:
		var info struct{ Profile, Version string }
		if err := json.Unmarshal(body, &info); err != nil {
			r.err = "body is not the demo app's JSON: " + err.Error()
		}
		r.profile, r.version = info.Profile, info.Version
	}
	return r
}

// redirect expects the seed's port-80 answer: 308 to the same path and
// query on https.
func (c *rawClient) redirect(path string) record {
	r := record{start: time.Now()}
	resp, _, err := c.roundTrip(path)
	r.end = time.Now()
	switch {
	case err != nil:
		r.err = err.Error()
	case resp.StatusCode != http.StatusPermanentRedirect:
		r.err = "status " + resp.Status + ", want 308"
	case resp.Header.Get("Location") != "https://localhost"+path:
		r.err = fmt.Sprintf("Location %q, want %q", resp.Header.Get("Location"), "https://localhost"+path)
	}
	return r
}
