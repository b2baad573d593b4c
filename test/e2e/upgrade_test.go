package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/admin"
)

// The tests in this file upgrade a running `cutover serve` (the real
// binary) under strict load: `cutover upgrade` starts a new process that
// inherits the listening sockets; the old one drains and exits.

// upgradeConfig is what the upgrade tests vary in the configuration.
type upgradeConfig struct {
	http, https string
	drain       string // drain_timeout
	healthTO    string // health timeout
	adminTCP    string
}

func (bs *binaryStack) writeUpgradeConfig(t *testing.T, c upgradeConfig) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen:\n  http: \"%s\"\n", c.http)
	if c.https != "" {
		fmt.Fprintf(&b, "  https: \"%s\"\ntls:\n  self_signed: true\n  hosts: [\"localhost\"]\n", c.https)
	}
	fmt.Fprintf(&b, "state_dir: %s\nadmin:\n  socket: %s\n", bs.dir, bs.socket)
	if c.adminTCP != "" {
		fmt.Fprintf(&b, "  tcp: \"%s\"\n  token: \"e2e-secret\"\n", c.adminTCP)
	}
	if c.drain == "" {
		c.drain = "5s"
	}
	if c.healthTO == "" {
		c.healthTO = "1s"
	}
	fmt.Fprintf(&b, `log:
  access: "off"
services:
  web:
    health: {path: /healthz, interval: 50ms, timeout: %s, healthy: 2, unhealthy: 2}
    drain_timeout: %s
    pools:
      blue: ["%s"]
      green: ["%s"]
    active: blue
`, c.healthTO, c.drain, bs.blue.addr(), bs.green.addr())
	if err := os.WriteFile(bs.cfgPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// procGone reports whether pid has exited (no such process, or a zombie
// waiting for its new parent to reap it).
func procGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// cutoverPIDs lists the live processes running the test's cutover binary.
func cutoverPIDs(t *testing.T, bin string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil && exe == bin && !procGone(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// awaitGone waits until pid has exited: the old process of an upgrade is
// no child of the test once it has handed over, so there is nothing to
// wait on but /proc.
func awaitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !procGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still running %s after the upgrade", pid, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killAtCleanup ends pid with SIGKILL when the test ends (processes started
// by upgrades are not the test's children).
func killAtCleanup(t *testing.T, pid int) {
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
}

func (bs *binaryStack) adminPID(t *testing.T) int {
	t.Helper()
	c := admin.NewUnixClient(bs.socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := c.Health(ctx)
	if err != nil {
		t.Fatalf("admin health: %v", err)
	}
	return h.PID
}

func (bs *binaryStack) activePool(t *testing.T) string {
	t.Helper()
	c := admin.NewUnixClient(bs.socket)
	defer c.Close()
	st, err := c.Status(context.Background(), "web")
	if err != nil {
		t.Fatalf("admin status: %v", err)
	}
	return st.Services[0].Active
}

// upgradeOnce runs `cutover upgrade ARGS...`, checks it succeeded, that
// the new process answers the admin API, the old one exits and exactly one
// cutover runs; it returns the new pid.
func (bs *binaryStack) upgradeOnce(t *testing.T, oldPID int, args ...string) (newPID int, out string) {
	t.Helper()
	out, errOut, code := bs.cli(t, append([]string{"upgrade"}, args...)...)
	if code != 0 {
		t.Fatalf("cutover upgrade: exit %d\n%s%s", code, out, errOut)
	}
	newPID = bs.adminPID(t)
	killAtCleanup(t, newPID)
	if newPID == oldPID || !strings.Contains(out, fmt.Sprintf("pid %d serves", newPID)) {
		t.Fatalf("after the upgrade the admin API is served by pid %d (old %d); upgrade said:\n%s", newPID, oldPID, out)
	}
	awaitGone(t, oldPID, 15*time.Second)
	if pids := cutoverPIDs(t, bs.bin); len(pids) != 1 || pids[0] != newPID {
		t.Fatalf("after the upgrade these cutover processes run: %v, want only %d", pids, newPID)
	}
	return newPID, out
}

type loadRun struct {
	done chan *loadclient.Result
}

// startLoad runs the strict client until ctx ends (or o.Duration passes).
func startLoad(ctx context.Context, t *testing.T, o loadclient.Options) *loadRun {
	t.Helper()
	l := &loadRun{done: make(chan *loadclient.Result, 1)}
	go func() {
		res, err := loadclient.Run(ctx, o)
		if err != nil {
			t.Error(err)
		}
		l.done <- res
	}()
	return l
}

// strictCount counts the failed requests of res: any socket error, or a
// status other than want (2xx when want is 0).
func strictCount(res *loadclient.Result, want int) (requests, failed int, kinds map[loadclient.ErrKind]int, backends map[string]int) {
	kinds, backends = map[loadclient.ErrKind]int{}, map[string]int{}
	for _, r := range res.Records {
		requests++
		switch {
		case r.Err != "":
			failed++
			kinds[r.Err]++
		case want == 0 && r.Failed(), want != 0 && r.Status != want:
			failed++
		default:
			backends[r.Backend]++
		}
	}
	return requests, failed, kinds, backends
}

// TestUpgradeUnderLoadDropsNothing: 10 upgrades in a row under 32 strict
// keep-alive clients (no retries; every socket error and unexpected status
// counted): on plain HTTP served by the event loops, and on HTTPS (TLS,
// goroutine engine) with plain-HTTP clients getting the 308 redirect. No
// request fails, and each upgrade leaves exactly one cutover process, the
// new one, serving the same active pool.
func TestUpgradeUnderLoadDropsNothing(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tls        bool
		plain, tlc int // plain-HTTP and TLS clients
	}{
		{name: "plain HTTP, event loops", plain: 32},
		{name: "HTTPS, and HTTP redirecting", tls: true, plain: 8, tlc: 24},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := newBinaryStack(t)
			c := upgradeConfig{http: bs.proxyAddr}
			if tc.tls {
				c.https = freeAddr(t)
			}
			bs.writeUpgradeConfig(t, c)
			s := bs.serve(t)
			if out, errOut, code := bs.cli(t, "deploy", "green", "--timeout", "20s"); code != 0 {
				t.Fatalf("deploy green: exit %d\n%s%s", code, out, errOut)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var plain, secure *loadRun
			if tc.plain > 0 {
				plain = startLoad(ctx, t, loadclient.Options{
					Addr: bs.proxyAddr, Connections: tc.plain, Duration: time.Minute, Host: "localhost",
					BackendHeader: "X-Backend", Timeout: requestTimeout,
				})
			}
			if tc.tlc > 0 {
				secure = startLoad(ctx, t, loadclient.Options{
					Addr: c.https, Connections: tc.tlc, Duration: time.Minute, Host: "localhost",
					BackendHeader: "X-Backend", Timeout: requestTimeout,
					TLS: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}},
				})
			}
			pid := s.cmd.Process.Pid
			var ready, switched []string
			for i := 0; i < 10; i++ {
				var out string
				pid, out = bs.upgradeOnce(t, pid)
				ready = append(ready, between(out, "ready in ", " ms"))
				switched = append(switched, between(out, "switched in ", " ms"))
				if got := bs.activePool(t); got != "green" {
					t.Fatalf("after upgrade %d the active pool is %q, want green", i+1, got)
				}
			}
			cancel()
			total, totalFailed := 0, 0
			for _, l := range []struct {
				run  *loadRun
				want int
				what string
			}{{plain, 0, "plain HTTP"}, {secure, 0, "TLS"}} {
				if l.run == nil {
					continue
				}
				want := l.want
				if l.what == "plain HTTP" && tc.tls {
					want = http.StatusPermanentRedirect
				}
				res := <-l.run.done
				if res == nil {
					t.FailNow()
				}
				n, failed, kinds, backends := strictCount(res, want)
				total, totalFailed = total+n, totalFailed+failed
				if failed != 0 || n == 0 {
					t.Errorf("%s: %d of %d requests failed across 10 upgrades (%v)", l.what, failed, n, kinds)
				}
				for backend := range backends {
					if backend != "green-1" && want == 0 {
						t.Errorf("%s: %s answered; the active pool is green", l.what, backend)
					}
				}
			}
			t.Logf("10 upgrades under %d strict clients (%s): %d requests, %d failed; new process ready in %v ms; admin API switched in %v ms",
				tc.plain+tc.tlc, tc.name, total, totalFailed, ready, switched)
		})
	}
}

func between(s, from, to string) string {
	i := strings.Index(s, from)
	if i < 0 {
		return "?"
	}
	s = s[i+len(from):]
	if j := strings.Index(s, to); j >= 0 {
		return s[:j]
	}
	return "?"
}
