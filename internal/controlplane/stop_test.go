package controlplane

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/history"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// The Docker side of a scheduled stop runs against the real engine in
// internal/cli's TestReleaseOnDocker; these tests pin the timer's edge
// cases, where a fake stopper says when it was called.

// fakeStopper reports each StopPool on calls; block makes it wait for its
// context (a stop that cutover's shutdown interrupts).
type fakeStopper struct {
	calls chan string
	block bool
}

func (f *fakeStopper) StopPool(ctx context.Context, service, pool string) ([]string, error) {
	f.calls <- service + "/" + pool
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return []string{pool + "-1"}, nil
}

// dockerConfig is testConfig with pools that follow Docker containers;
// their targets are set with SetTargets, as the provider does.
func dockerConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	cfg := testConfig(t, dir, []string{"127.0.0.1:1"}, []string{"127.0.0.1:2"})
	cfg.Docker.Network = "net"
	s := &cfg.Services[0]
	s.Pools = []config.Pool{{Name: "blue", Containers: []string{"blue-1"}, Port: 8000}, {Name: "green", Containers: []string{"green-1"}, Port: 8000}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration invalid: %v", err)
	}
	return cfg
}

func startStopManager(t *testing.T, cfg *config.Config, st PoolStopper, blue, green *backend) *Manager {
	t.Helper()
	m, err := New(cfg, Options{Stopper: st})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	for pool, b := range map[string]*backend{"blue": blue, "green": green} {
		if err := m.SetTargets("web", pool, []upstream.TargetSpec{{Addr: b.addr(), Label: pool + "-1"}}); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func stopsAt(t *testing.T, m *Manager, pool string) *time.Time {
	t.Helper()
	st, err := m.Status("web")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st[0].Pools {
		if p.Name == pool {
			return p.StopsAt
		}
	}
	t.Fatalf("no pool %s", pool)
	return nil
}

func awaitCall(t *testing.T, f *fakeStopper, want string) {
	t.Helper()
	select {
	case got := <-f.calls:
		if got != want {
			t.Fatalf("stopped %s, want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s was not stopped within 10s of its time", want)
	}
}

// awaitStopEntry waits for the history to record the end of a stop of
// pool that began after since.
func awaitStopEntry(t *testing.T, m *Manager, pool string, since time.Time) history.Entry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range m.History("web") {
			if e.Kind == history.KindStop && e.From == pool && e.Result != history.ResultRunning && !e.Started.Before(since) {
				return e
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the history records no finished stop of %s", pool)
	return history.Entry{}
}

func deployStopOld(t *testing.T, m *Manager, pool string, after time.Duration) *admin.DeployResult {
	t.Helper()
	d := admin.Duration(after)
	res, err := m.Deploy(context.Background(), admin.DeployRequest{Service: "web", Pool: pool, Timeout: admin.Duration(10 * time.Second), StopOld: &d}, nil)
	if err != nil {
		t.Fatalf("deploy %s with stop_old %s: %v", pool, after, err)
	}
	return res
}

func TestScheduledStopFires(t *testing.T) {
	f := &fakeStopper{calls: make(chan string, 4)}
	m := startStopManager(t, dockerConfig(t, t.TempDir()), f, newBackend(t, "blue"), newBackend(t, "green"))
	before := time.Now()
	res := deployStopOld(t, m, "green", 300*time.Millisecond)
	if res.StopsAt == nil || res.StopsAt.Before(before.Add(300*time.Millisecond)) {
		t.Fatalf("deploy result stops_at %v, want at least 300ms after the deploy began", res.StopsAt)
	}
	// The time is in the status until the stop is done; the time can
	// have passed by now on a slow machine, so it is read before.
	awaitCall(t, f, "web/blue")
	if time.Now().Before(*res.StopsAt) {
		t.Fatalf("blue was stopped at %s, before its time %s", time.Now().Format("15:04:05.000"), res.StopsAt.Format("15:04:05.000"))
	}
	e := awaitStopEntry(t, m, "blue", before)
	if e.Result != history.ResultSucceeded || e.Reason != `stopped the containers of pool "blue": blue-1` {
		t.Fatalf("history of the stop: %s %q", e.Result, e.Reason)
	}
	if at := stopsAt(t, m, "blue"); at != nil {
		t.Fatalf("status still shows blue stopping at %s after the stop", at)
	}
	m.mu.Lock()
	left := m.services[0].desired.StopAt
	m.mu.Unlock()
	if len(left) != 0 {
		t.Fatalf("desired state keeps %v after the stop", left)
	}
}

func TestScheduledStopDroppedByRollback(t *testing.T) {
	f := &fakeStopper{calls: make(chan string, 4)}
	m := startStopManager(t, dockerConfig(t, t.TempDir()), f, newBackend(t, "blue"), newBackend(t, "green"))
	deployStopOld(t, m, "green", time.Hour)
	if at := stopsAt(t, m, "blue"); at == nil || time.Until(*at) < 59*time.Minute {
		t.Fatalf("status: blue stops at %v, want in an hour", at)
	}
	if _, err := m.Rollback(context.Background(), admin.RollbackRequest{Service: "web", Timeout: admin.Duration(10 * time.Second)}, nil); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if at := stopsAt(t, m, "blue"); at != nil {
		t.Fatalf("blue is live again, but status says it stops at %s", at)
	}
	m.mu.Lock()
	s := m.services[0]
	left, timer := s.desired.StopAt, s.stopTimer
	m.mu.Unlock()
	if len(left) != 0 || timer != nil {
		t.Fatalf("after the rollback: scheduled stops %v, timer armed %v", left, timer != nil)
	}
	st, err := state.NewFileStore(m.Config().StateDir).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st["web"].StopAt) != 0 {
		t.Fatalf("state file keeps the stop after the rollback: %v", st["web"].StopAt)
	}
	select {
	case c := <-f.calls:
		t.Fatalf("%s was stopped", c)
	default:
	}
}

// A stop that cutover's shutdown interrupts stays in the state file, and
// the next start carries it out.
func TestScheduledStopSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := dockerConfig(t, dir)
	blue, green := newBackend(t, "blue"), newBackend(t, "green")
	first := &fakeStopper{calls: make(chan string, 4), block: true}
	m1 := startStopManager(t, cfg, first, blue, green)
	res := deployStopOld(t, m1, "green", 100*time.Millisecond)
	awaitCall(t, first, "web/blue")
	m1.Close()
	st, err := state.NewFileStore(dir).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if at, ok := st["web"].StopAt["blue"]; !ok || !at.Equal(*res.StopsAt) {
		t.Fatalf("state file after an interrupted stop: stop_at %v, want blue at %s", st["web"].StopAt, res.StopsAt)
	}

	second := &fakeStopper{calls: make(chan string, 4)}
	restarted := time.Now()
	m2 := startStopManager(t, cfg, second, blue, green)
	awaitCall(t, second, "web/blue")
	if e := awaitStopEntry(t, m2, "blue", restarted); e.Result != history.ResultSucceeded {
		t.Fatalf("stop after the restart: %s %q", e.Result, e.Reason)
	}
	if at := stopsAt(t, m2, "blue"); at != nil {
		t.Fatalf("status still shows blue stopping at %s after the stop", at)
	}
}

func TestStopOldRefusals(t *testing.T) {
	blue, green := newBackend(t, "blue"), newBackend(t, "green")
	d := admin.Duration(time.Minute)
	// Pools from the configuration's addresses: nothing cutover can stop.
	m := startManager(t, testConfig(t, t.TempDir(), []string{blue.addr()}, []string{green.addr()}))
	_, err := m.Deploy(context.Background(), admin.DeployRequest{Service: "web", Pool: "green", StopOld: &d}, nil)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindRefused {
		t.Fatalf("stop_old of a pool from the configuration: %v, want refused", err)
	}
	if livePool(t, m) != "blue" {
		t.Fatal("a refused deploy switched")
	}
	neg := admin.Duration(-time.Second)
	_, err = m.Deploy(context.Background(), admin.DeployRequest{Service: "web", Pool: "green", StopOld: &neg}, nil)
	if !errors.As(err, &ce) || ce.Kind != admin.KindInvalid {
		t.Fatalf("negative stop_old: %v, want invalid", err)
	}
	_, err = m.Deploy(context.Background(), admin.DeployRequest{Service: "web", Pool: "green", StopOld: &d, Preview: true}, nil)
	if !errors.As(err, &ce) || ce.Kind != admin.KindInvalid {
		t.Fatalf("stop_old with a preview: %v, want invalid", err)
	}
}
