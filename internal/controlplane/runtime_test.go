package controlplane

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/history"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

func TestRestartServesTheSamePool(t *testing.T) {
	dir := t.TempDir()
	b1, g1, p1 := newBackend(t, "b1"), newBackend(t, "g1"), newBackend(t, "p1")
	cfg := testConfig(t, dir, addrs(b1), addrs(g1))
	m := startManager(t, cfg)
	ctx := context.Background()
	if _, err := m.Deploy(ctx, admin.DeployRequest{Pool: "green"}, nil); err != nil {
		t.Fatal(err)
	}
	m.Close()

	// A fresh Manager (a restart) serves green, with blue as the previous
	// pool, and green's targets serve at once.
	m2 := startManager(t, cfg)
	if got := livePool(t, m2); got != "green" {
		t.Fatalf("after a restart requests go to %q, want green", got)
	}
	st, _ := m2.Status("web")
	if st[0].Previous != "blue" {
		t.Fatalf("previous after restart %q, want blue", st[0].Previous)
	}
	if s := poolOf(t, m2, "web", "green").Targets()[0].State(); s != upstream.Up {
		t.Fatalf("active pool target after restart is %v, want up", s)
	}

	// Targets set at run time survive a restart too.
	if _, err := m2.Deploy(ctx, admin.DeployRequest{Pool: "purple", Targets: addrs(p1)}, nil); err != nil {
		t.Fatal(err)
	}
	m2.Close()
	m3 := startManager(t, cfg)
	if got := livePool(t, m3); got != "purple" {
		t.Fatalf("after a restart requests go to %q, want purple", got)
	}
	ts := poolOf(t, m3, "web", "purple").Targets()
	if len(ts) != 1 || ts[0].Addr() != p1.addr() {
		t.Fatalf("purple targets after restart: %v", ts)
	}
	if _, err := m3.Rollback(ctx, admin.RollbackRequest{}, nil); err != nil {
		t.Fatalf("rollback after restart: %v", err)
	}
	if got := livePool(t, m3); got != "green" {
		t.Fatalf("rollback after restart went to %q, want green", got)
	}
}

func TestStateNamingMissingPoolFails(t *testing.T) {
	dir := t.TempDir()
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	st := state.New()
	st.Services["web"] = state.Service{Active: "purple", Previous: "blue"}
	if err := state.Save(state.Path(dir), st); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, dir, addrs(b1), addrs(g1))
	cfg.Path = "/etc/cutover/cutover.yaml"
	_, err := New(cfg, Options{})
	if err == nil {
		t.Fatal("New accepted a state naming a pool the configuration does not have")
	}
	for _, want := range []string{`"purple"`, `"web"`, state.Path(dir), cfg.Path, "add the pool back", "edit the state file", "delete it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestCorruptStateFails(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(state.Path(dir), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	b1 := newBackend(t, "b1")
	_, err := New(testConfig(t, dir, addrs(b1), nil), Options{})
	if err == nil || !strings.Contains(err.Error(), state.Path(dir)) {
		t.Fatalf("corrupt state: %v; want an error naming the file", err)
	}
}

func TestStateWrittenAtomically(t *testing.T) {
	dir := t.TempDir()
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	m := startManager(t, testConfig(t, dir, addrs(b1), addrs(g1)))
	if _, err := os.Stat(state.Path(dir)); !os.IsNotExist(err) {
		t.Fatalf("state written before any change: %v", err)
	}
	for i := 0; i < 6; i++ {
		pool := []string{"green", "blue"}[i%2]
		if _, err := m.Deploy(context.Background(), admin.DeployRequest{Pool: pool}, nil); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != state.FileName && e.Name() != history.FileName {
			t.Errorf("state_dir holds %s besides the state and history files", e.Name())
		}
	}
	st, err := state.Load(state.Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	if st.Services["web"].Active != "blue" || st.Services["web"].Previous != "green" {
		t.Fatalf("state %+v", st.Services["web"])
	}
}

func TestSetTargets(t *testing.T) {
	b1, g1, g2, g3 := newBackend(t, "b1"), newBackend(t, "g1"), newBackend(t, "g2"), newBackend(t, "g3")
	m := startManager(t, testConfig(t, t.TempDir(), addrs(b1), addrs(g1, g2)))
	green := poolOf(t, m, "web", "green")
	waitPool(t, m, "web", "green", allUp(green))
	kept := green.Targets()[1]
	leaving := green.Targets()[0]

	if err := m.SetTargets("web", "green", []upstream.TargetSpec{{Addr: g2.addr()}, {Addr: g3.addr(), Label: "green-3"}}); err != nil {
		t.Fatal(err)
	}
	ts := green.Targets()
	if len(ts) != 2 || ts[0] != kept {
		t.Fatalf("targets after SetTargets: %v; want the kept target object first", ts)
	}
	if ts[1].State() != upstream.Unknown && ts[1].Status().LastProbe.IsZero() {
		t.Fatalf("new target starts %v without a probe, want unknown", ts[1].State())
	}
	waitPool(t, m, "web", "green", allUp(green))
	if ts[1].Label() != "green-3" {
		t.Errorf("label %q", ts[1].Label())
	}
	// The removed target is retired once idle: no new connections.
	waitPool(t, m, "web", "green", func() bool {
		_, err := leaving.Get(context.Background())
		return errors.Is(err, upstream.ErrTargetClosed)
	})

	var ce *admin.Error
	if err := m.SetTargets("web", "nope", nil); !errors.As(err, &ce) || ce.Kind != admin.KindNotFound {
		t.Fatalf("unknown pool: %v", err)
	}
	if err := m.SetTargets("web", "green", []upstream.TargetSpec{{Addr: g2.addr()}, {Addr: g2.addr()}}); !errors.As(err, &ce) || ce.Kind != admin.KindInvalid {
		t.Fatalf("duplicate target: %v", err)
	}
}

func TestHealthChecksTakeTargetsOutAndBackIn(t *testing.T) {
	b1, b2 := newBackend(t, "b1"), newBackend(t, "b2")
	m := startManager(t, testConfig(t, t.TempDir(), addrs(b1, b2), nil))
	blue := poolOf(t, m, "web", "blue")
	t1 := blue.Targets()[0]
	if t1.State() != upstream.Up {
		t.Fatalf("active pool target starts %v, want up", t1.State())
	}
	b1.status.Store(http.StatusBadGateway)
	waitPool(t, m, "web", "blue", func() bool { return t1.State() == upstream.Down })
	st, _ := m.Status("web")
	tgt := st[0].Pools[0].Targets[0]
	if tgt.State != "down" || !strings.Contains(tgt.LastError, "502") || tgt.LastProbe == nil {
		t.Fatalf("status of the failing target: %+v", tgt)
	}
	b1.status.Store(http.StatusOK)
	waitPool(t, m, "web", "blue", func() bool { return t1.State() == upstream.Up })
}

func reloadConfig(t *testing.T, cfg *config.Config, edit func(*config.Config)) *config.Config {
	t.Helper()
	c := *cfg
	c.Services = make([]config.Service, len(cfg.Services))
	for i, s := range cfg.Services {
		s.Pools = append([]config.Pool(nil), s.Pools...)
		s.Hosts = append([]string(nil), s.Hosts...)
		c.Services[i] = s
	}
	edit(&c)
	if err := c.Validate(); err != nil {
		t.Fatalf("edited configuration invalid: %v", err)
	}
	return &c
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	b1, b2, g1, a1 := newBackend(t, "b1"), newBackend(t, "b2"), newBackend(t, "g1"), newBackend(t, "a1")
	cfg := testConfig(t, dir, addrs(b1, b2), addrs(g1))
	m := startManager(t, cfg)
	ctx := context.Background()
	blue := poolOf(t, m, "web", "blue")
	keptTarget := blue.Targets()[0]
	svcBefore := m.Router().Table().Lookup([]byte("x"))
	// A request in flight on blue across the reload.
	held := svcBefore.Acquire()

	// Reload: blue loses b2, a service "api" is added for api.example.com,
	// green is removed, balance changes.
	next := reloadConfig(t, cfg, func(c *config.Config) {
		web := &c.Services[0]
		web.Balance = upstream.LeastConn.String()
		web.Pools = []config.Pool{{Name: "blue", Targets: addrs(b1)}}
		api := config.DefaultService("api")
		api.Hosts = []string{"api.example.com"}
		api.Pools = []config.Pool{{Name: "blue", Targets: addrs(a1)}}
		api.Active = "blue"
		c.Services = append(c.Services, api)
	})
	if err := m.Reload(next); err != nil {
		t.Fatal(err)
	}
	if svc := m.Router().Table().Lookup([]byte("x")); svc != svcBefore {
		t.Fatal("reload replaced the service object of a service that stayed")
	}
	if blue.Targets()[0] != keptTarget || len(blue.Targets()) != 1 {
		t.Fatalf("blue targets after reload: %v", blue.Targets())
	}
	if blue.Balance() != upstream.LeastConn {
		t.Fatalf("balance %v, want least_conn", blue.Balance())
	}
	if held.InFlight() != 1 {
		t.Fatal("in-flight count lost across the reload")
	}
	held.End()
	api := m.Router().Table().Lookup([]byte("api.example.com"))
	if api == nil || api.Name() != "api" || api.Active().Name() != "blue" {
		t.Fatalf("api.example.com routes to %v", api)
	}
	if _, ok := svcBefore.Pool("green"); ok {
		t.Fatal("green still a pool of web after it left the configuration")
	}
	st, _ := m.Status("")
	if len(st) != 2 {
		t.Fatalf("status lists %d services, want 2", len(st))
	}
	// Deploying green is no longer possible; bringing it back is.
	back := reloadConfig(t, next, func(c *config.Config) {
		c.Services[0].Pools = append(c.Services[0].Pools, config.Pool{Name: "green", Targets: addrs(g1)})
	})
	if err := m.Reload(back); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Deploy(ctx, admin.DeployRequest{Service: "web", Pool: "green"}, nil); err != nil {
		t.Fatalf("deploy of a pool added by reload: %v", err)
	}

	// Removing the active pool is refused and changes nothing.
	noGreen := reloadConfig(t, back, func(c *config.Config) {
		c.Services[0].Pools = c.Services[0].Pools[:1]
	})
	err := m.Reload(noGreen)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindRefused || !strings.Contains(err.Error(), "deploy another pool first") {
		t.Fatalf("reload removing the active pool: %v", err)
	}
	if got := livePool(t, m); got != "green" {
		t.Fatalf("refused reload changed the live pool to %q", got)
	}
	if _, ok := svcBefore.Pool("green"); !ok {
		t.Fatal("refused reload removed green")
	}
}

func TestReloadKeepsRuntimeTargetsUnlessTheFileChangesThem(t *testing.T) {
	b1, g1, g2, g3 := newBackend(t, "b1"), newBackend(t, "g1"), newBackend(t, "g2"), newBackend(t, "g3")
	cfg := testConfig(t, t.TempDir(), addrs(b1), addrs(g1))
	m := startManager(t, cfg)
	ctx := context.Background()
	if _, err := m.Deploy(ctx, admin.DeployRequest{Pool: "green", Targets: addrs(g2)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Rollback(ctx, admin.RollbackRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	green := poolOf(t, m, "web", "green")
	// Same file: the run-time targets stay.
	if err := m.Reload(reloadConfig(t, cfg, func(*config.Config) {})); err != nil {
		t.Fatal(err)
	}
	if ts := green.Targets(); len(ts) != 1 || ts[0].Addr() != g2.addr() {
		t.Fatalf("green after an unchanged reload: %v, want the deployed %s", ts, g2.addr())
	}
	// The file changes green: the file wins.
	if err := m.Reload(reloadConfig(t, cfg, func(c *config.Config) {
		c.Services[0].Pools[1].Targets = addrs(g3)
	})); err != nil {
		t.Fatal(err)
	}
	if ts := green.Targets(); len(ts) != 1 || ts[0].Addr() != g3.addr() {
		t.Fatalf("green after the file changed it: %v, want %s", ts, g3.addr())
	}
}

func TestReloadRefusedDuringDeploy(t *testing.T) {
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	g1.status.Store(http.StatusServiceUnavailable)
	cfg := testConfig(t, t.TempDir(), addrs(b1), addrs(g1))
	m := startManager(t, cfg)
	ev := newEvents()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := m.Deploy(ctx, admin.DeployRequest{Pool: "green"}, ev.fn)
		done <- err
	}()
	ev.waitPhase(t, admin.PhaseHealth, nil)
	err := m.Reload(reloadConfig(t, cfg, func(*config.Config) {}))
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindBusy || !strings.Contains(err.Error(), `deploy of service "web" to pool "green"`) {
		t.Fatalf("reload during a deploy: %v", err)
	}
	cancel()
	<-done
	if err := m.Reload(reloadConfig(t, cfg, func(*config.Config) {})); err != nil {
		t.Fatalf("reload after the deploy ended: %v", err)
	}
}

func TestSingleServiceNameOptional(t *testing.T) {
	b1, a1 := newBackend(t, "b1"), newBackend(t, "a1")
	cfg := testConfig(t, t.TempDir(), addrs(b1), nil)
	cfg = reloadConfig(t, cfg, func(c *config.Config) {
		c.Services[0].Hosts = []string{"www.example.com"}
		api := config.DefaultService("api")
		api.Hosts = []string{"api.example.com"}
		api.Pools = []config.Pool{{Name: "blue", Targets: addrs(a1)}}
		api.Active = "blue"
		c.Services = append(c.Services, api)
	})
	m := startManager(t, cfg)
	_, err := m.Deploy(context.Background(), admin.DeployRequest{Pool: "green"}, nil)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindInvalid || !strings.Contains(err.Error(), "web, api") || !strings.Contains(err.Error(), "-s SERVICE") {
		t.Fatalf("deploy without -s with two services: %v", err)
	}
}

// goodbyeExchange stands for a long-lived exchange on a target (a
// WebSocket, an event stream): in flight on the target until told
// goodbye, then it ends, as the data plane's do.
type goodbyeExchange struct {
	t    *upstream.Target
	told chan time.Time
}

func (g *goodbyeExchange) Goodbye() {
	g.told <- time.Now()
	g.t.Release(g)
	g.t.End(true)
}

// TestRemovedTargetsSayGoodbye: a reload that removes a target tells the
// long-lived exchanges on it goodbye within the drain's last part
// (drain_close_spread), as a deploy's drain does, instead of letting the
// drain timeout cut them.
func TestRemovedTargetsSayGoodbye(t *testing.T) {
	const drain, spread = 2 * time.Second, time.Second
	b1, b2, g1 := newBackend(t, "b1"), newBackend(t, "b2"), newBackend(t, "g1")
	cfg := testConfig(t, t.TempDir(), addrs(b1, b2), addrs(g1))
	cfg.Services[0].DrainTimeout, cfg.Services[0].DrainCloseSpread = drain, spread
	m := startManager(t, cfg)
	blue := poolOf(t, m, "web", "blue")
	var gone *upstream.Target
	for _, tg := range blue.Targets() {
		if tg.Addr() == b2.addr() {
			gone = tg
		}
	}
	ex := &goodbyeExchange{t: gone, told: make(chan time.Time, 1)}
	gone.Begin()
	gone.Hold(ex)
	next := reloadConfig(t, cfg, func(c *config.Config) {
		c.Services[0].Pools[0].Targets = addrs(b1)
	})
	reloaded := time.Now()
	if err := m.Reload(next); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-ex.told:
		if d := at.Sub(reloaded); d < drain-spread-100*time.Millisecond || d > drain {
			t.Errorf("told goodbye %s after the reload, want within the last %s of the %s drain", d, spread, drain)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long-lived exchange on the removed target was never told goodbye")
	}
}
