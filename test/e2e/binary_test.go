package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/testutil/freeport"
	"github.com/cutover/cutover/internal/testutil/lockedbuf"
	"github.com/cutover/cutover/internal/testutil/refused"
)

// The tests in this file run the real cutover binary: `cutover serve` as a
// child process, and the CLI commands as separate processes.

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// cutoverBinary builds cmd/cutover once per test run.
func cutoverBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "cutover-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "cutover"), "../../cmd/cutover").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/cutover: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "cutover")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// served is a running `cutover serve` process.
type served struct {
	cmd    *exec.Cmd
	stderr *lockedbuf.Buffer
	done   chan struct{}
}

// binaryStack is a configuration for the binary and its backends.
type binaryStack struct {
	bin, dir, cfgPath, socket, proxyAddr string
	blue, green                          *appBackend
}

func newBinaryStack(t *testing.T) *binaryStack {
	t.Helper()
	bs := &binaryStack{bin: cutoverBinary(t)}
	dir, err := os.MkdirTemp("", "cutover-e2e-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bs.dir = dir
	bs.socket = filepath.Join(dir, "admin.sock")
	bs.proxyAddr = freeport.For(t)
	bs.blue = newAppBackend(t, "blue-1", nil)
	bs.green = newAppBackend(t, "green-1", nil)
	bs.cfgPath = filepath.Join(dir, "cutover.yaml")
	bs.writeConfig(t, "")
	return bs
}

func (bs *binaryStack) writeConfig(t *testing.T, extraAdmin string) {
	t.Helper()
	text := fmt.Sprintf(`listen:
  http: "%s"
state_dir: %s
admin:
  socket: %s
%slog:
  access: "off"
services:
  web:
    health: {path: /healthz, interval: 50ms, timeout: 1s, healthy: 2, unhealthy: 2}
    drain_timeout: 5s
    pools:
      blue: ["%s"]
      green: ["%s"]
    active: blue
`, bs.proxyAddr, bs.dir, bs.socket, extraAdmin, bs.blue.addr(), bs.green.addr())
	if err := os.WriteFile(bs.cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// serve starts `cutover serve -c FILE` and waits until its admin API
// answers. The process is killed at the end of the test.
func (bs *binaryStack) serve(t *testing.T) *served {
	t.Helper()
	s := &served{stderr: &lockedbuf.Buffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(bs.bin, "serve", "-c", bs.cfgPath)
	s.cmd.Stdout = s.stderr
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
		if t.Failed() {
			t.Logf("cutover serve output:\n%s", s.stderr.String())
		}
	})
	c := admin.NewUnixClient(bs.socket)
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("cutover serve exited: %v\n%s", s.cmd.ProcessState, s.stderr.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Health(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cutover serve's admin API did not answer within 20s: %v\n%s", err, s.stderr.String())
		}
		// Polling a child process's readiness: there is no signal to await.
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// kill9 ends the serve process with SIGKILL: no cleanup runs.
func (s *served) kill9(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.done
}

// cli runs a cutover CLI command as its own process.
func (bs *binaryStack) cli(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bs.bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(os.Environ(), "CUTOVER_SOCKET="+bs.socket)
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run cutover %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// get sends one request through the proxy and returns the backend name.
func (bs *binaryStack) get(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + bs.proxyAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET through the proxy: %s %s", resp.Status, body)
	}
	return string(body)
}

func TestBinaryDeployKill9Restart(t *testing.T) {
	bs := newBinaryStack(t)
	s := bs.serve(t)
	if got := bs.get(t); got != "blue-1" {
		t.Fatalf("first start serves %q, want blue-1", got)
	}
	fi, err := os.Stat(bs.socket)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v, %v; want mode 0600", fi.Mode(), err)
	}
	out, errOut, code := bs.cli(t, "deploy", "green", "--timeout", "20s")
	if code != 0 {
		t.Fatalf("cutover deploy green: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "switched from blue to green") {
		t.Errorf("deploy output:\n%s", out)
	}
	if got := bs.get(t); got != "green-1" {
		t.Fatalf("after deploy green: %q", got)
	}

	s.kill9(t)
	bs.serve(t) // the stale socket left by kill -9 is replaced
	if got := bs.get(t); got != "green-1" {
		t.Fatalf("after kill -9 and restart requests go to %q, want green-1", got)
	}
	out, _, code = bs.cli(t, "status", "--json")
	var st admin.StatusResponse
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status --json: exit %d\n%s", code, out)
	}
	if st.Services[0].Active != "green" || st.Services[0].Previous != "blue" {
		t.Fatalf("status after restart: active %q previous %q", st.Services[0].Active, st.Services[0].Previous)
	}
	// A rollback after the restart returns to blue.
	if out, errOut, code := bs.cli(t, "rollback"); code != 0 {
		t.Fatalf("rollback after restart: exit %d\n%s%s", code, out, errOut)
	}
	if got := bs.get(t); got != "blue-1" {
		t.Fatalf("after rollback: %q", got)
	}
	// The deploy from before the kill -9 is still in the history, under
	// the rollback made after it.
	out, _, code = bs.cli(t, "history", "--json")
	var h admin.HistoryResponse
	if code != 0 || json.Unmarshal([]byte(out), &h) != nil {
		t.Fatalf("history --json: exit %d\n%s", code, out)
	}
	if len(h.Entries) != 2 || h.Entries[0].Kind != "rollback" || h.Entries[0].To != "blue" || h.Entries[0].Result != "succeeded" ||
		h.Entries[1].Kind != "deploy" || h.Entries[1].From != "blue" || h.Entries[1].To != "green" || h.Entries[1].Result != "succeeded" {
		t.Fatalf("history after kill -9 and restart:\n%s", out)
	}
}

func TestBinaryDeployUnhealthyRefusedUnderLoad(t *testing.T) {
	bs := newBinaryStack(t)
	bs.serve(t)
	bs.green.unhealthy.Store(true)
	unreachable := refused.Addr(t)

	loadDone := make(chan *loadclient.Result, 1)
	go func() {
		res, err := loadclient.Run(context.Background(), loadclient.Options{
			Addr: bs.proxyAddr, Connections: 8, Duration: 3 * time.Second, Host: "app", BackendHeader: "X-Backend",
			Timeout: requestTimeout,
		})
		if err != nil {
			t.Error(err)
		}
		loadDone <- res
	}()
	out, errOut, code := bs.cli(t, "deploy", "green", "--timeout", "500ms")
	if code == 0 {
		t.Fatalf("deploy to an unhealthy pool exited 0:\n%s", out)
	}
	for _, want := range []string{bs.green.addr(), "503", `live traffic stays on "blue"`} {
		if !strings.Contains(errOut, want) {
			t.Errorf("deploy error lacks %q:\n%s", want, errOut)
		}
	}
	out, errOut, code = bs.cli(t, "deploy", "purple", "--target", unreachable, "--timeout", "500ms")
	if code == 0 || !strings.Contains(errOut, unreachable) || !strings.Contains(errOut, "connection refused") {
		t.Fatalf("deploy to an unreachable target: exit %d\n%s%s", code, out, errOut)
	}
	res := <-loadDone
	if res == nil {
		t.FailNow()
	}
	sum := res.Summarize()
	if sum.Failed != 0 || sum.Requests == 0 {
		t.Fatalf("%d of %d requests failed during refused deploys (%v)", sum.Failed, sum.Requests, sum.ErrorKinds)
	}
	for backend := range sum.ByBackend {
		if backend != "blue-1" {
			t.Errorf("a refused deploy let %s answer", backend)
		}
	}
	t.Logf("refused deploys under load: %d requests, %d failed", sum.Requests, sum.Failed)
}

func TestBinaryTCPAdminNeedsToken(t *testing.T) {
	bs := newBinaryStack(t)
	tcp := freeport.For(t)
	bs.writeConfig(t, fmt.Sprintf("  tcp: \"%s\"\n", tcp))
	cmd := exec.Command(bs.bin, "serve", "-c", bs.cfgPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), "token") {
			t.Fatalf("serve with admin.tcp and no token: %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("serve with admin.tcp and no token kept running:\n%s", out.String())
	}

	// With a token: requests without it get 401.
	bs.writeConfig(t, fmt.Sprintf("  tcp: \"%s\"\n  token: \"e2e-secret\"\n", tcp))
	bs.serve(t)
	resp, err := http.Get("http://" + tcp + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("TCP admin without a token: %s, want 401", resp.Status)
	}
	c := admin.NewTCPClient(tcp, "e2e-secret")
	defer c.Close()
	if _, err := c.Status(context.Background(), ""); err != nil {
		t.Fatalf("TCP admin with the token: %v", err)
	}
}

func TestBinaryReloadUnderLoadDropsNothing(t *testing.T) {
	bs := newBinaryStack(t)
	s := bs.serve(t)
	loadDone := make(chan *loadclient.Result, 1)
	go func() {
		res, err := loadclient.Run(context.Background(), loadclient.Options{
			Addr: bs.proxyAddr, Connections: 16, Duration: 3 * time.Second, Host: "app", BackendHeader: "X-Backend",
			Timeout: requestTimeout,
		})
		if err != nil {
			t.Error(err)
		}
		loadDone <- res
	}()
	for i := 0; i < 5; i++ {
		if out, errOut, code := bs.cli(t, "reload"); code != 0 || !strings.Contains(out, "configuration reloaded") {
			t.Fatalf("cutover reload: exit %d\n%s%s", code, out, errOut)
		}
		if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	// A broken file is refused with its problem; traffic keeps flowing.
	good, err := os.ReadFile(bs.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	broken := string(good) + "    bogus_key: 1\n"
	if err := os.WriteFile(bs.cfgPath, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := bs.cli(t, "reload")
	if code != 1 || !strings.Contains(errOut, bs.cfgPath) || !strings.Contains(errOut, "bogus_key") {
		t.Fatalf("reload of a broken file: exit %d\n%s", code, errOut)
	}
	res := <-loadDone
	if res == nil {
		t.FailNow()
	}
	sum := res.Summarize()
	if sum.Failed != 0 || sum.Requests == 0 {
		t.Fatalf("%d of %d requests failed across reloads (%v)", sum.Failed, sum.Requests, sum.ErrorKinds)
	}
	t.Logf("10 reloads (5 API, 5 SIGHUP) and 1 refused under load: %d requests, %d failed", sum.Requests, sum.Failed)
}
