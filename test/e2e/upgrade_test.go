package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/testutil/freeport"
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
	if i < 0 || i+2 >= len(s) || s[i+2] == 'X' {
		return true
	}
	if s[i+2] != 'Z' {
		return false
	}
	// The main thread of a killed Go process can be a zombie while its
	// other threads are still exiting and hold its files, the state lease
	// among them: gone once it is the only thread left.
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return err != nil || len(tasks) <= 1
}

// cutoverPIDs lists the live `cutover serve -c FILE` processes of the
// stack (CLI commands run the same binary; other tests' stacks another FILE).
func cutoverPIDs(t *testing.T, bs *binaryStack) []int {
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
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && exe == bs.bin && string(cmdline) == bs.bin+"\x00serve\x00-c\x00"+bs.cfgPath+"\x00" && !procGone(pid) {
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
	if pids := cutoverPIDs(t, bs); len(pids) != 1 || pids[0] != newPID {
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
				c.https = freeport.For(t)
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

// fakeBinary writes an executable shell script standing in for a new
// cutover.
func fakeBinary(t *testing.T, dir, name, script string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// awaitFile waits until path exists: a script signals it started.
func awaitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within 20s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUpgradeRefusedKeepsServing: a new binary that exits at once, the
// real one with a broken configuration, and one that never gets ready are
// each refused with their output, under strict load: the old process keeps
// serving (same pid, nothing failed), and while an upgrade waits a deploy
// and a second upgrade are refused with a message.
func TestUpgradeRefusedKeepsServing(t *testing.T) {
	bs := newBinaryStack(t)
	bs.writeUpgradeConfig(t, upgradeConfig{http: bs.proxyAddr})
	s := bs.serve(t)
	pid := s.cmd.Process.Pid
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := startLoad(ctx, t, loadclient.Options{
		Addr: bs.proxyAddr, Connections: 16, Duration: time.Minute, Host: "app",
		BackendHeader: "X-Backend", Timeout: requestTimeout,
	})
	refused := func(what string, want []string, args ...string) {
		t.Helper()
		out, errOut, code := bs.cli(t, append([]string{"upgrade"}, args...)...)
		if code != 1 {
			t.Fatalf("%s: upgrade exit %d, want 1\n%s%s", what, code, out, errOut)
		}
		for _, w := range append(want, "keeps serving") {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: the refusal does not say %q:\n%s", what, w, errOut)
			}
		}
		if got := bs.adminPID(t); got != pid {
			t.Fatalf("%s: the admin API is served by pid %d, want the old %d", what, got, pid)
		}
		if pids := cutoverPIDs(t, bs); len(pids) != 1 || pids[0] != pid {
			t.Fatalf("%s: cutover processes %v, want only %d", what, pids, pid)
		}
	}

	exits := fakeBinary(t, bs.dir, "exits", "echo 'new cutover: cannot start, exiting' >&2\nexit 3\n")
	refused("exits at once", []string{"new cutover: cannot start, exiting", "exit status 3"}, "--binary", exits)

	good, err := os.ReadFile(bs.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bs.cfgPath, append(good, "    bogus_key: 1\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	refused("broken configuration", []string{"bogus_key", bs.cfgPath}, "--binary", bs.bin)
	if err := os.WriteFile(bs.cfgPath, good, 0o600); err != nil {
		t.Fatal(err)
	}

	started := filepath.Join(bs.dir, "never-ready.started")
	never := fakeBinary(t, bs.dir, "never", fmt.Sprintf("echo 'starting, slowly' >&2\ntouch %s\nexec sleep 60\n", started))
	done := make(chan struct{})
	go func() {
		defer close(done)
		refused("never ready", []string{"was not ready within --timeout 2s", "starting, slowly"}, "--binary", never, "--timeout", "2s")
	}()
	awaitFile(t, started)
	// While it waits: a deploy and another upgrade are refused.
	if out, errOut, code := bs.cli(t, "deploy", "green", "--timeout", "5s"); code == 0 || !strings.Contains(errOut, "upgrading itself") {
		t.Errorf("deploy during an upgrade: exit %d, want a refusal naming the upgrade\n%s%s", code, out, errOut)
	}
	if out, errOut, code := bs.cli(t, "upgrade", "--binary", bs.bin); code == 0 || !strings.Contains(errOut, "already running") {
		t.Errorf("second upgrade during an upgrade: exit %d\n%s%s", code, out, errOut)
	}
	<-done
	// After the refusals a deploy and a real upgrade work.
	if out, errOut, code := bs.cli(t, "deploy", "green", "--timeout", "20s"); code != 0 {
		t.Fatalf("deploy after the refused upgrades: exit %d\n%s%s", code, out, errOut)
	}
	bs.upgradeOnce(t, pid)
	cancel()
	res := <-load.done
	if res == nil {
		t.FailNow()
	}
	n, failed, kinds, _ := strictCount(res, 0)
	if failed != 0 || n == 0 {
		t.Fatalf("%d of %d requests failed across the refused upgrades (%v)", failed, n, kinds)
	}
	t.Logf("3 refused upgrades, 1 refused deploy, 1 refused second upgrade, then a deploy and an upgrade, under 16 strict clients: %d requests, %d failed", n, failed)
}

// TestUpgradeKeepsWebSocketUntilDrainTimeout: a WebSocket opened before an
// upgrade keeps working on the old process after the new one took over,
// and is closed, with a close frame 1001, only in the last part of the
// drain (drain_close_spread, by default a fifth of the drain timeout).
func TestUpgradeKeepsWebSocketUntilDrainTimeout(t *testing.T) {
	bs := newBinaryStack(t)
	const drain = 2 * time.Second
	bs.writeUpgradeConfig(t, upgradeConfig{http: bs.proxyAddr, drain: drain.String()})
	s := bs.serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+bs.proxyAddr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	echo := func(msg string) error {
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			return err
		}
		_, b, err := ws.Read(ctx)
		if err != nil {
			return err
		}
		if string(b) != "blue-1:"+msg {
			return fmt.Errorf("echo %q, want %q", b, "blue-1:"+msg)
		}
		return nil
	}
	if err := echo("before"); err != nil {
		t.Fatal(err)
	}
	upgraded := time.Now()
	newPID := bs.upgradeOnceKeepOld(t, s.cmd.Process.Pid)
	if err := echo("after the upgrade"); err != nil {
		t.Fatalf("the WebSocket stopped working when the new process took over: %v", err)
	}
	if procGone(s.cmd.Process.Pid) {
		t.Fatal("the old process exited with a WebSocket open before the drain timeout")
	}
	// The old process tells it goodbye near the end of its drain, and exits.
	_, _, err = ws.Read(ctx)
	closedAfter := time.Since(upgraded)
	if err == nil {
		t.Fatal("the WebSocket read a message nobody sent")
	}
	if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
		t.Fatalf("the WebSocket ended with %v (close status %d), want a close frame %d", err, code, websocket.StatusGoingAway)
	}
	if spread := drain / 5; closedAfter < drain-spread {
		t.Fatalf("the WebSocket was closed %v after the upgrade, before the last %v of the %v drain", closedAfter, spread, drain)
	}
	// (s.done waits for the output pipe, which the new process shares.)
	awaitGone(t, s.cmd.Process.Pid, 10*time.Second)
	if got := bs.get(t); got != "blue-1" || bs.adminPID(t) != newPID {
		t.Fatalf("after the old process exited: %q from pid %d, want blue-1 from %d", got, bs.adminPID(t), newPID)
	}
	t.Logf("WebSocket kept %v after the upgrade (drain timeout %v)", closedAfter.Round(time.Millisecond), drain)
}

// upgradeOnceKeepOld runs an upgrade and returns the new pid without
// waiting for the old process to exit.
func (bs *binaryStack) upgradeOnceKeepOld(t *testing.T, oldPID int) int {
	t.Helper()
	out, errOut, code := bs.cli(t, "upgrade")
	if code != 0 {
		t.Fatalf("cutover upgrade: exit %d\n%s%s", code, out, errOut)
	}
	newPID := bs.adminPID(t)
	killAtCleanup(t, newPID)
	if newPID == oldPID {
		t.Fatalf("after the upgrade the admin API is still served by the old pid %d", oldPID)
	}
	return newPID
}

// TestUpgradeKill9DuringHandOver: kill -9 of the new process or of the old
// one while the new one waits to be ready. Killing the new one leaves the
// old serving; killing the old one lets the new one take over once ready.
// Either way the state then makes a plain restart serve the right pool
// (green, not the configuration's blue).
func TestUpgradeKill9DuringHandOver(t *testing.T) {
	for _, victim := range []string{"new", "old"} {
		t.Run("kill -9 the "+victim+" process", func(t *testing.T) {
			bs := newBinaryStack(t)
			bs.writeUpgradeConfig(t, upgradeConfig{http: bs.proxyAddr})
			s := bs.serve(t)
			oldPID := s.cmd.Process.Pid
			if out, errOut, code := bs.cli(t, "deploy", "green", "--timeout", "20s"); code != 0 {
				t.Fatalf("deploy green: exit %d\n%s%s", code, out, errOut)
			}
			// The new process cannot be ready while green fails its checks.
			bs.green.unhealthy.Store(true)
			upgradeDone := make(chan int, 1)
			go func() {
				_, _, code := bs.cli(t, "upgrade", "--timeout", "30s")
				upgradeDone <- code
			}()
			newPID := 0
			deadline := time.Now().Add(20 * time.Second)
			for newPID == 0 {
				for _, p := range cutoverPIDs(t, bs) {
					if p != oldPID {
						newPID = p
					}
				}
				if time.Now().After(deadline) {
					t.Fatal("no new cutover process appeared within 20s of the upgrade")
				}
				time.Sleep(10 * time.Millisecond)
			}
			killAtCleanup(t, newPID)
			survivor := oldPID
			if victim == "new" {
				syscall.Kill(newPID, syscall.SIGKILL)
				if code := <-upgradeDone; code != 1 {
					t.Fatalf("upgrade whose new process was killed: exit %d, want 1", code)
				}
				bs.green.unhealthy.Store(false)
			} else {
				// (not s.kill9: its wait ends only when the new process,
				// which shares the output pipe, ends too)
				syscall.Kill(oldPID, syscall.SIGKILL)
				awaitGone(t, oldPID, 10*time.Second)
				survivor = newPID
				<-upgradeDone // its connection died with the old process
				bs.green.unhealthy.Store(false)
				// The orphaned new process takes over once green passes.
				deadline := time.Now().Add(20 * time.Second)
				for {
					c := admin.NewUnixClient(bs.socket)
					h, err := c.Health(context.Background())
					c.Close()
					if err == nil && h.PID == newPID {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the new process did not take over within 20s of the old one's kill -9 (last: %v %v)", h, err)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			if got := bs.adminPID(t); got != survivor {
				t.Fatalf("admin API served by pid %d, want the survivor %d", got, survivor)
			}
			if got := bs.get(t); got != "green-1" {
				t.Fatalf("the survivor serves %q, want green-1", got)
			}
			// Then the survivor dies too, and a plain start serves green.
			syscall.Kill(survivor, syscall.SIGKILL)
			awaitGone(t, survivor, 10*time.Second)
			bs.serve(t)
			if got := bs.get(t); got != "green-1" {
				t.Fatalf("a plain restart after kill -9 during the hand-over serves %q, want green-1", got)
			}
			if got := bs.activePool(t); got != "green" {
				t.Fatalf("a plain restart after kill -9 during the hand-over: active %q, want green", got)
			}
		})
	}
}

// TestRestartAppliesListenAddresses: cutover restart applies what a reload
// cannot: the HTTP listener moves to a new address (opened fresh; the old
// one closes with the old process), and an admin TCP listener appears.
func TestRestartAppliesListenAddresses(t *testing.T) {
	bs := newBinaryStack(t)
	bs.writeUpgradeConfig(t, upgradeConfig{http: bs.proxyAddr})
	s := bs.serve(t)
	oldAddr := bs.proxyAddr
	bs.proxyAddr = freeport.For(t)
	tcp := freeport.For(t)
	bs.writeUpgradeConfig(t, upgradeConfig{http: bs.proxyAddr, adminTCP: tcp})
	out, errOut, code := bs.cli(t, "reload")
	if code != 0 || !strings.Contains(out+errOut, "configuration reloaded") {
		t.Fatalf("reload: exit %d\n%s%s", code, out, errOut)
	}
	if c, err := net.DialTimeout("tcp", bs.proxyAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("a reload opened the new listen address; only a restart should")
	}
	out, errOut, code = bs.cli(t, "restart")
	if code != 0 {
		t.Fatalf("restart: exit %d\n%s%s", code, out, errOut)
	}
	newPID := bs.adminPID(t)
	killAtCleanup(t, newPID)
	if got := bs.get(t); got != "blue-1" {
		t.Fatalf("after the restart the new address serves %q", got)
	}
	c := admin.NewTCPClient(tcp, "e2e-secret")
	defer c.Close()
	if h, err := c.Health(context.Background()); err != nil || h.PID != newPID {
		t.Fatalf("admin TCP after the restart: %v %v, want pid %d", h, err, newPID)
	}
	awaitGone(t, s.cmd.Process.Pid, 10*time.Second)
	if c, err := net.DialTimeout("tcp", oldAddr, time.Second); err == nil {
		c.Close()
		t.Fatalf("the old listen address %s still accepts after the restart", oldAddr)
	}
}

// TestUpgradeTellsSystemdTheNewMainPID: with $NOTIFY_SOCKET set (systemd
// Type=notify), serve sends READY=1, and the new process of an upgrade
// sends MAINPID=<its pid> and READY=1 (examples/systemd/cutover.service).
func TestUpgradeTellsSystemdTheNewMainPID(t *testing.T) {
	bs := newBinaryStack(t)
	bs.writeUpgradeConfig(t, upgradeConfig{http: bs.proxyAddr})
	sock := filepath.Join(bs.dir, "notify.sock")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	s := bs.serve(t)
	read := func() string {
		t.Helper()
		nc.SetReadDeadline(time.Now().Add(20 * time.Second))
		b := make([]byte, 4096)
		n, err := nc.Read(b)
		if err != nil {
			t.Fatalf("no sd_notify datagram: %v", err)
		}
		return string(b[:n])
	}
	if got := read(); got != "READY=1\n" {
		t.Fatalf("first datagram %q, want READY=1", got)
	}
	newPID, _ := bs.upgradeOnce(t, s.cmd.Process.Pid)
	if got, want := read(), fmt.Sprintf("MAINPID=%d\nREADY=1\n", newPID); got != want {
		t.Fatalf("datagram after the upgrade %q, want %q", got, want)
	}
	unit, err := os.ReadFile("../../examples/systemd/cutover.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "NotifyAccess=all", "ExecReload=/usr/local/bin/cutover upgrade"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("examples/systemd/cutover.service lacks %q", want)
		}
	}
}

// TestUpgradeSaysGoodbyeToWebSockets upgrades cutover while WebSockets run
// through the old process: each gets a close frame 1001 near the end of the
// old process's drain (and its target one too), rather than a bare TCP
// close when the old process exits, and a client reconnecting is served by
// the new process.
func TestUpgradeSaysGoodbyeToWebSockets(t *testing.T) {
	const sockets = 4
	bs := newBinaryStack(t)
	bs.writeUpgradeConfig(t, upgradeConfig{http: bs.proxyAddr, drain: "3s"})
	s := bs.serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ends := make(chan wsEnd, sockets)
	opened := make(chan struct{}, sockets)
	for i := range sockets {
		go func() { ends <- runWebSocket(ctx, "ws://"+bs.proxyAddr+"/ws", i, opened) }()
	}
	for range sockets {
		select {
		case <-opened:
		case <-ctx.Done():
			t.Fatal("the WebSockets did not open")
		}
	}
	bs.upgradeOnce(t, s.cmd.Process.Pid)
	for i := range sockets {
		e := <-ends
		if e.status != websocket.StatusGoingAway {
			t.Errorf("WebSocket %d through the old process ended with close status %d (%v), want a close frame %d", i, e.status, e.err, websocket.StatusGoingAway)
		}
	}
	for i := range sockets {
		select {
		case code := <-bs.blue.wsClosed:
			if code != websocket.StatusGoingAway {
				t.Errorf("the target saw WebSocket %d end with close status %d, want %d", i, code, websocket.StatusGoingAway)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the target saw %d of %d WebSockets end", i, sockets)
		}
	}
	if got := echoOnce(ctx, "ws://"+bs.proxyAddr+"/ws"); !strings.HasPrefix(got, "blue-1:") {
		t.Errorf("a WebSocket opened after the upgrade was answered %q, want blue's echo", got)
	}
}
