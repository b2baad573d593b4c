package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane"
)

// healthBackend is a real backend whose /healthz answer the test controls.
type healthBackend struct {
	*httptest.Server
	status atomic.Int32
}

func newHealthBackend(t *testing.T) *healthBackend {
	t.Helper()
	b := &healthBackend{}
	b.status.Store(http.StatusOK)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(b.status.Load()))
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *healthBackend) addr() string { return b.Listener.Addr().String() }

const cliConfig = `listen:
  http: "127.0.0.1:8080"
state_dir: %[1]s
services:
  web:
    health: {path: /healthz, interval: 20ms, timeout: 1s, healthy: 2, unhealthy: 2}
    drain_timeout: 5s
    pools:
      blue: ["%[2]s"]
      green: ["%[3]s"]
    active: blue
`

// cliServer is a real control plane behind a real admin server, as
// `cutover serve` runs them.
type cliServer struct {
	cfgPath, socket string
	blue, green     *healthBackend
	m               *controlplane.Manager
}

func startCLIServer(t *testing.T) *cliServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "cutover-cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cs := &cliServer{blue: newHealthBackend(t), green: newHealthBackend(t)}
	cs.cfgPath = filepath.Join(dir, "cutover.yaml")
	text := fmt.Sprintf(cliConfig, dir, cs.blue.addr(), cs.green.addr())
	if err := os.WriteFile(cs.cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cs.cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs.socket = cfg.Admin.Socket
	cs.m, err = controlplane.New(cfg, controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cs.m.Close)
	srv, err := admin.Listen(admin.Options{Socket: cs.socket, Manager: cs.m, Reload: admin.FileReloader(cs.cfgPath, nil, cs.m.Reload)})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return cs
}

// runCLI runs the real command tree with captured streams.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(Streams{In: strings.NewReader(""), Out: &out, Err: &errOut})
	root.SetArgs(args)
	err = root.Execute()
	if err != nil {
		code = ExitCode(err)
	}
	return out.String(), errOut.String(), code, err
}

func TestCLIDeployStatusRollback(t *testing.T) {
	cs := startCLIServer(t)
	sock := "--socket=" + cs.socket

	out, _, code, err := runCLI(t, "status", sock)
	if code != 0 {
		t.Fatalf("status: %v", err)
	}
	for _, want := range []string{"web: active blue, previous none", "blue (active)", cs.blue.addr(), cs.green.addr(), "IN-FLIGHT", "SERVED"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}

	out, _, code, err = runCLI(t, "deploy", "green", sock, "--timeout", "10s")
	if code != 0 {
		t.Fatalf("deploy green: exit %d: %v\n%s", code, err, out)
	}
	// One target: counts agree with their nouns ("1 target", "0 requests").
	for _, want := range []string{"checking 1 target of \"green\"", "2 passes needed", cs.green.addr() + " ready (2/2 checks passed) — 1 of 1 target ready",
		"switched service \"web\" from \"blue\" to \"green\" (0 requests in flight", "deploy done: service web switched from blue to green",
		"time to healthy:", "in flight at switch:  0", "drained:              0", "time to drain:"} {
		if !strings.Contains(out, want) {
			t.Errorf("deploy output lacks %q:\n%s", want, out)
		}
	}
	// Durations are rounded for people: no nanoseconds.
	if m := regexp.MustCompile(`\d+\.\d{5,}(s|ms|µs)`).FindString(out); m != "" {
		t.Errorf("deploy output has the unrounded duration %q:\n%s", m, out)
	}

	out, _, code, _ = runCLI(t, "deploy", "green", sock)
	if code != 0 || !strings.Contains(out, `pool "green" is already active for service "web": nothing to do`) {
		t.Fatalf("deploy of the active pool: exit %d\n%s", code, out)
	}

	out, _, code, err = runCLI(t, "status", "-s", "web", "--json", sock)
	if code != 0 {
		t.Fatal(err)
	}
	var st admin.StatusResponse
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	if st.Services[0].Active != "green" || st.Services[0].Previous != "blue" {
		t.Fatalf("status --json: %+v", st.Services[0])
	}

	out, _, code, err = runCLI(t, "rollback", sock)
	if code != 0 || !strings.Contains(out, "rollback done: service web switched from green to blue") {
		t.Fatalf("rollback: exit %d %v\n%s", code, err, out)
	}
}

func TestCLIDeployFailureExitsNonZero(t *testing.T) {
	cs := startCLIServer(t)
	cs.green.status.Store(http.StatusServiceUnavailable)
	out, _, code, err := runCLI(t, "deploy", "green", "--socket", cs.socket, "--timeout", "300ms")
	if code != 1 || err == nil {
		t.Fatalf("deploy to an unhealthy pool: exit %d, err %v", code, err)
	}
	msg := err.Error()
	for _, want := range []string{`to pool "green" refused`, cs.green.addr(), "503", `live traffic stays on "blue"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(out, "not ready") {
		t.Errorf("progress did not say which target is not ready:\n%s", out)
	}
	st, _ := cs.m.Status("web")
	if st[0].Active != "blue" {
		t.Fatalf("active %q after a failed deploy", st[0].Active)
	}

	_, _, code, err = runCLI(t, "rollback", "--socket", cs.socket)
	if code != 1 || !strings.Contains(err.Error(), "no previous pool") {
		t.Fatalf("rollback without a previous pool: exit %d, %v", code, err)
	}
}

func TestCLISocketDiscovery(t *testing.T) {
	cs := startCLIServer(t)
	// -c FILE: the configuration's admin.socket.
	if _, _, code, err := runCLI(t, "status", "-c", cs.cfgPath); code != 0 {
		t.Fatalf("status -c: %v", err)
	}
	// CUTOVER_SOCKET.
	t.Setenv(SocketEnv, cs.socket)
	if _, _, code, err := runCLI(t, "status"); code != 0 {
		t.Fatalf("status with %s: %v", SocketEnv, err)
	}
	// --socket wins over the environment.
	missing := filepath.Join(filepath.Dir(cs.socket), "missing.sock")
	_, _, code, err := runCLI(t, "status", "--socket", missing)
	want := fmt.Sprintf("no cutover is running at %s (connect: no such file or directory): start it with `cutover serve -c FILE` or point --socket at the right path", missing)
	if code != 2 || err == nil || err.Error() != want {
		t.Fatalf("status at a missing socket: exit %d, %v\nwant: %s", code, err, want)
	}
	// -c FILE whose socket is not on this host (a container's path, say):
	// the message names the file and the way out, not "no cutover runs".
	t.Setenv(SocketEnv, "")
	other := filepath.Join(t.TempDir(), "cutover.yaml")
	if err := os.WriteFile(other, []byte("listen: {http: \"127.0.0.1:1\"}\nstate_dir: /nonexistent/cutover\nservices:\n  web:\n    pools: {blue: [\"127.0.0.1:2\"]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, code, err = runCLI(t, "status", "-c", other)
	if code != 2 || err == nil || !strings.Contains(err.Error(), "no admin socket at /nonexistent/cutover/admin.sock (admin.socket of "+other+")") ||
		!strings.Contains(err.Error(), "in a container") || !strings.Contains(err.Error(), "--socket PATH") {
		t.Fatalf("status -c with the socket elsewhere: exit %d, %v", code, err)
	}
	// Nothing given.
	_, _, code, err = runCLI(t, "deploy", "green")
	if code != 2 || err == nil || !strings.Contains(err.Error(), "--socket PATH") || !strings.Contains(err.Error(), SocketEnv) || !strings.Contains(err.Error(), "-c FILE") {
		t.Fatalf("no socket given: exit %d, %v", code, err)
	}
}

func TestCLIReload(t *testing.T) {
	cs := startCLIServer(t)
	out, _, code, err := runCLI(t, "reload", "--socket", cs.socket)
	if code != 0 || !strings.Contains(out, "configuration reloaded") {
		t.Fatalf("reload: exit %d, %v\n%s", code, err, out)
	}
	if err := os.WriteFile(cs.cfgPath, []byte("services: [oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, code, err = runCLI(t, "reload", "--socket", cs.socket)
	if code != 1 || err == nil || !strings.Contains(err.Error(), cs.cfgPath) || !strings.Contains(err.Error(), "keeps serving") {
		t.Fatalf("reload of a broken file: exit %d, %v", code, err)
	}
	if _, err := cs.m.Status("web"); err != nil {
		t.Fatalf("running configuration lost: %v", err)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	_, _, code, err := runCLI(t, "deploy", "--socket", "/nonexistent.sock")
	if code != 2 || !strings.Contains(err.Error(), "exactly one pool") {
		t.Fatalf("deploy without a pool: exit %d, %v", code, err)
	}
	_, _, code, err = runCLI(t, "rollback", "green", "--socket", "/nonexistent.sock")
	if code != 2 || !strings.Contains(err.Error(), `unexpected argument "green"`) {
		t.Fatalf("rollback with an argument: exit %d, %v", code, err)
	}
}

func TestCLIHistory(t *testing.T) {
	cs := startCLIServer(t)
	sock := "--socket=" + cs.socket
	if out, _, _, _ := runCLI(t, "history", sock); !strings.Contains(out, "no operations recorded yet") {
		t.Fatalf("history before any operation:\n%s", out)
	}
	if _, _, code, err := runCLI(t, "deploy", "green", sock, "--timeout", "10s"); code != 0 {
		t.Fatal(err)
	}
	cs.blue.status.Store(http.StatusServiceUnavailable)
	if _, _, code, _ := runCLI(t, "deploy", "blue", sock, "--timeout", "300ms"); code != 1 {
		t.Fatalf("deploy to an unhealthy blue: exit %d, want 1", code)
	}
	if _, _, code, _ := runCLI(t, "rollback", "-s", "nope", sock); code != 1 {
		t.Fatalf("rollback of an unknown service: exit %d, want 1", code)
	}

	out, _, code, err := runCLI(t, "history", sock)
	if code != 0 {
		t.Fatal(err)
	}
	t.Logf("cutover history:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("history has %d lines, want 3:\n%s", len(lines), out)
	}
	wants := [][]string{ // newest first
		{"3 ", "rollback", "nope", "refused", `no service "nope"`},
		{"2 ", "deploy", "web", "green → blue", "timed_out", "not healthy within 300ms"},
		{"1 ", "deploy", "web", "blue → green", "succeeded", "healthy after", "0 in flight at the switch, 0 drained in"},
	}
	for i, ws := range wants {
		for _, w := range ws {
			if !strings.Contains(lines[i], w) {
				t.Errorf("history line %d lacks %q: %s", i+1, w, lines[i])
			}
		}
	}

	out, _, code, err = runCLI(t, "history", "-s", "web", "--json", sock)
	if code != 0 {
		t.Fatal(err)
	}
	var h admin.HistoryResponse
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatalf("history --json is not JSON: %v\n%s", err, out)
	}
	if len(h.Entries) != 2 || h.Entries[0].Result != "timed_out" || h.Entries[1].Result != "succeeded" ||
		h.Entries[1].TimeToHealthyMS <= 0 || len(h.Entries[1].Targets) != 1 || h.Entries[1].Targets[0].Addr != cs.green.addr() ||
		len(h.Entries[0].Targets) != 1 || !strings.Contains(h.Entries[0].Targets[0].Error, "503") {
		t.Fatalf("history --json -s web: %s", out)
	}
}

// TestTrialFlagsAreCheckedBeforeAnythingRuns: bad canary and guard flags
// of deploy and release are refused with exit 2 and a message naming the
// flag, before any connection to cutover is made.
func TestTrialFlagsAreCheckedBeforeAnythingRuns(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock") // nothing listens: a flag check must come first
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"deploy", "green", "--canary", "ten"}, "--canary"},
		{[]string{"deploy", "green", "--max-error-rate", "1%"}, "--guard"},
		{[]string{"deploy", "green", "--guard", "1m", "--max-error-rate", "150%"}, "--max-error-rate"},
		{[]string{"deploy", "green", "--guard", "1m", "--max-latency", "0.5x"}, "--max-latency"},
		{[]string{"release", "-f", "c.yaml", "--preview", "--canary", "10"}, "--preview and --canary"},
		{[]string{"release", "-f", "c.yaml", "--min-requests", "10"}, "--guard"},
	}
	for _, c := range cases {
		_, stderr, code, err := runCLI(t, append(c.args, "--socket", sock)...)
		if code != 2 || err == nil || !strings.Contains(err.Error()+stderr, c.want) {
			t.Errorf("%v: exit %d, err %v, stderr %q; want exit 2 naming %s", c.args, code, err, stderr, c.want)
		}
	}
}
