package controlplane

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

func TestDeployRollbackAlternating(t *testing.T) {
	dir := t.TempDir()
	b1, b2, g1, g2 := newBackend(t, "b1"), newBackend(t, "b2"), newBackend(t, "g1"), newBackend(t, "g2")
	m := startManager(t, testConfig(t, dir, addrs(b1, b2), addrs(g1, g2)))
	if got := livePool(t, m); got != "blue" {
		t.Fatalf("first start serves %q, want blue (services.web.active)", got)
	}
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		var res *admin.DeployResult
		var err error
		want, from := "green", "blue"
		if i%2 == 1 {
			want, from = "blue", "green"
		}
		if i%4 == 0 || i%4 == 1 {
			res, err = m.Deploy(ctx, admin.DeployRequest{Pool: want, Timeout: admin.Duration(10 * time.Second)}, nil)
		} else {
			res, err = m.Rollback(ctx, admin.RollbackRequest{Timeout: admin.Duration(10 * time.Second)}, nil)
		}
		if err != nil {
			t.Fatalf("switch %d to %s: %v", i, want, err)
		}
		if res.Pool != want || res.From != from || res.NoOp {
			t.Fatalf("switch %d: result %+v, want %s from %s", i, res, want, from)
		}
		if got := livePool(t, m); got != want {
			t.Fatalf("switch %d: requests go to %q, want %q", i, got, want)
		}
		st, err := state.Load(state.Path(dir))
		if err != nil {
			t.Fatal(err)
		}
		if s := st.Services["web"]; s.Active != want || s.Previous != from {
			t.Fatalf("switch %d: state %+v, want active %s previous %s", i, s, want, from)
		}
	}
}

func TestDeployRefusedUnhealthyAndUnreachable(t *testing.T) {
	b1, g1, g2 := newBackend(t, "b1"), newBackend(t, "g1"), newBackend(t, "g2")
	g2.status.Store(http.StatusServiceUnavailable)
	dead := deadAddr(t)
	m := startManager(t, testConfig(t, t.TempDir(), addrs(b1), []string{g1.addr(), g2.addr(), dead}))

	ev := newEvents()
	_, err := m.Deploy(context.Background(), admin.DeployRequest{Pool: "green", Timeout: admin.Duration(500 * time.Millisecond)}, ev.fn)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindUnhealthy {
		t.Fatalf("deploy to an unhealthy pool: err %v, want KindUnhealthy", err)
	}
	if len(ce.Failing) != 2 {
		t.Fatalf("failing targets %+v, want %s and %s", ce.Failing, g2.addr(), dead)
	}
	msg := err.Error()
	for _, want := range []string{g2.addr(), "503", dead, "connection refused", `live traffic stays on "blue"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, g1.addr()+":") {
		t.Errorf("error names the healthy target %s:\n%s", g1.addr(), msg)
	}
	if got := livePool(t, m); got != "blue" {
		t.Fatalf("after a refused deploy requests go to %q, want blue", got)
	}
	st, _ := m.Status("web")
	if st[0].Active != "blue" || st[0].Previous != "" {
		t.Fatalf("status after refused deploy: active %q previous %q", st[0].Active, st[0].Previous)
	}
	// Progress named the ready target and the failing ones with reasons.
	var sawReady, sawRefused bool
	for len(ev.ch) > 0 {
		e := <-ev.ch
		if e.Target != nil && e.Target.Addr == g1.addr() && e.Target.Ready {
			sawReady = true
		}
		if e.Target != nil && e.Target.Addr == dead && strings.Contains(e.Message, "connection refused") {
			sawRefused = true
		}
	}
	if !sawReady || !sawRefused {
		t.Errorf("progress events: ready target seen %v, refused target seen %v", sawReady, sawRefused)
	}
}

func TestDeployNoOpAndRefusals(t *testing.T) {
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	m := startManager(t, testConfig(t, t.TempDir(), addrs(b1), addrs(g1)))
	ctx := context.Background()

	res, err := m.Deploy(ctx, admin.DeployRequest{Pool: "blue"}, nil)
	if err != nil || !res.NoOp || !strings.Contains(res.Message, "already active") {
		t.Fatalf("deploy of the active pool: %+v, %v; want a no-op", res, err)
	}
	_, err = m.Deploy(ctx, admin.DeployRequest{Pool: "blue", Targets: []string{g1.addr()}}, nil)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindRefused || !strings.Contains(err.Error(), "deploy the idle pool (green)") {
		t.Fatalf("changing the active pool's targets: %v; want refused naming the idle pool", err)
	}
	_, err = m.Deploy(ctx, admin.DeployRequest{Pool: "purple"}, nil)
	if !errors.As(err, &ce) || ce.Kind != admin.KindNotFound || !strings.Contains(err.Error(), "--target") {
		t.Fatalf("deploy of an unknown pool without targets: %v", err)
	}
	_, err = m.Deploy(ctx, admin.DeployRequest{Service: "api", Pool: "green"}, nil)
	if !errors.As(err, &ce) || ce.Kind != admin.KindNotFound {
		t.Fatalf("deploy of an unknown service: %v", err)
	}
	_, err = m.Deploy(ctx, admin.DeployRequest{Pool: "green", Targets: []string{"nohost"}}, nil)
	if !errors.As(err, &ce) || ce.Kind != admin.KindInvalid || !strings.Contains(err.Error(), "no port") {
		t.Fatalf("bad target: %v", err)
	}
	_, err = m.Rollback(ctx, admin.RollbackRequest{}, nil)
	if !errors.As(err, &ce) || ce.Kind != admin.KindRefused || !strings.Contains(err.Error(), "no previous pool") {
		t.Fatalf("rollback without a previous pool: %v", err)
	}
	if got := livePool(t, m); got != "blue" {
		t.Fatalf("refusals changed the live pool to %q", got)
	}
}

func TestDeployNewPoolWithTargets(t *testing.T) {
	dir := t.TempDir()
	b1, g1, p1 := newBackend(t, "b1"), newBackend(t, "g1"), newBackend(t, "p1")
	m := startManager(t, testConfig(t, dir, addrs(b1), addrs(g1)))
	ev := newEvents()
	res, err := m.Deploy(context.Background(), admin.DeployRequest{Pool: "purple", Targets: addrs(p1)}, ev.fn)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pool != "purple" || res.From != "blue" || res.TimeToHealthy <= 0 {
		t.Fatalf("result %+v", res)
	}
	if e := ev.waitPhase(t, admin.PhaseTargets, nil); !strings.Contains(e.Message, "created pool") {
		t.Errorf("targets event: %q", e.Message)
	}
	if got := livePool(t, m); got != "purple" {
		t.Fatalf("live pool %q, want purple", got)
	}
	st, err := state.Load(state.Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	ts := st.Services["web"].Targets["purple"]
	if len(ts) != 1 || ts[0].Addr != p1.addr() {
		t.Fatalf("state targets of purple: %+v", st.Services["web"].Targets)
	}
	ss, _ := m.Status("")
	if ss[0].Pools[2].Name != "purple" || ss[0].Pools[2].Source != admin.SourceRuntime {
		t.Fatalf("status pools: %+v", ss[0].Pools)
	}
}

func TestConcurrentDeploysOneProceeds(t *testing.T) {
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	g1.status.Store(http.StatusServiceUnavailable)
	m := startManager(t, testConfig(t, t.TempDir(), addrs(b1), addrs(g1)))

	const n = 8
	type outcome struct {
		res *admin.DeployResult
		err error
	}
	results := make(chan outcome, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := m.Deploy(context.Background(), admin.DeployRequest{Pool: "green", Timeout: admin.Duration(20 * time.Second)}, nil)
			results <- outcome{res, err}
		}()
	}
	close(start)
	// Green is unhealthy, so the deploy that got in waits; every other one
	// must be refused at once.
	for i := 0; i < n-1; i++ {
		o := <-results
		var ce *admin.Error
		if !errors.As(o.err, &ce) || ce.Kind != admin.KindBusy {
			t.Fatalf("concurrent deploy %d: %+v, %v; want refused as busy", i, o.res, o.err)
		}
		if !strings.Contains(o.err.Error(), `deploy of service "web" to pool "green"`) {
			t.Fatalf("busy error does not name the running deploy: %v", o.err)
		}
	}
	// A rollback is refused too while the deploy runs.
	_, err := m.Rollback(context.Background(), admin.RollbackRequest{}, nil)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindBusy {
		t.Fatalf("rollback during a deploy: %v; want busy", err)
	}
	st, _ := m.Status("web")
	if st[0].Operation == nil || st[0].Operation.Kind != admin.OpDeploy || st[0].Operation.Pool != "green" {
		t.Fatalf("status operation: %+v", st[0].Operation)
	}
	g1.status.Store(http.StatusOK)
	o := <-results
	if o.err != nil || o.res.Pool != "green" {
		t.Fatalf("the deploy that proceeded: %+v, %v", o.res, o.err)
	}
	wg.Wait()
	if got := livePool(t, m); got != "green" {
		t.Fatalf("live pool %q, want green", got)
	}
}

func TestDrainWaitsForInFlight(t *testing.T) {
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	m := startManager(t, testConfig(t, t.TempDir(), addrs(b1), addrs(g1)))
	svc := m.Router().Table().Lookup([]byte("x"))

	// A request running on blue, held until release is closed.
	held := svc.Acquire()
	if held.Name() != "blue" {
		t.Fatalf("acquired %q", held.Name())
	}
	release := make(chan struct{})
	go func() {
		<-release
		held.End()
	}()

	ev := newEvents()
	done := make(chan *admin.DeployResult, 1)
	go func() {
		res, err := m.Deploy(context.Background(), admin.DeployRequest{Pool: "green"}, ev.fn)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	ev.waitPhase(t, admin.PhaseDrain, func(e admin.Event) bool { return strings.Contains(e.Message, "draining") })
	// The switch happened: new requests go to green while blue drains.
	if got := livePool(t, m); got != "green" {
		t.Fatalf("during the drain requests go to %q, want green", got)
	}
	select {
	case res := <-done:
		t.Fatalf("deploy returned while a request was still running on blue: %+v", res)
	default:
	}
	close(release)
	res := <-done
	if res == nil {
		t.FailNow()
	}
	if res.InFlightAtSwitch != 1 || res.Drained != 1 || res.ClosedAtTimeout != 0 {
		t.Fatalf("result %+v: want 1 in flight at the switch, 1 drained, 0 closed", res)
	}
	if poolOf(t, m, "web", "blue").InFlight() != 0 {
		t.Fatal("blue still has requests in flight")
	}
}

func TestDrainTimeoutClosesRemaining(t *testing.T) {
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	cfg := testConfig(t, t.TempDir(), addrs(b1), addrs(g1))
	cfg.Services[0].DrainTimeout = 200 * time.Millisecond
	m := startManager(t, cfg)
	svc := m.Router().Table().Lookup([]byte("x"))

	// A request on blue that never finishes, with a real upstream
	// connection (a long response or a WebSocket).
	held := svc.Acquire()
	target := held.Pick(nil)
	conn, err := target.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	target.Begin()
	defer held.End()
	defer target.End(false)

	res, err := m.Deploy(context.Background(), admin.DeployRequest{Pool: "green"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.InFlightAtSwitch != 1 || res.ClosedAtTimeout != 1 || res.Drained != 0 || res.ConnsClosed != 1 {
		t.Fatalf("result %+v: want 1 in flight, 1 closed at the timeout over 1 connection", res)
	}
	if time.Duration(res.TimeToDrain) < 200*time.Millisecond {
		t.Fatalf("drain took %s, less than the 200ms drain timeout", time.Duration(res.TimeToDrain))
	}
	if !strings.Contains(res.Message, "1 closed at the drain timeout") {
		t.Errorf("message: %q", res.Message)
	}
	// The held connection was closed under the request.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("read on the held upstream connection: %v, want it closed", err)
	}
	// Blue stays warm: its targets still dial for a rollback.
	if c, err := target.Get(context.Background()); err != nil {
		t.Fatalf("blue target after the drain: %v", err)
	} else {
		target.Put(c)
	}
}

func TestRollbackNoWaitWhenSteadyAndProbesWhenNot(t *testing.T) {
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	m := startManager(t, testConfig(t, t.TempDir(), addrs(b1), addrs(g1)))
	ctx := context.Background()
	if _, err := m.Deploy(ctx, admin.DeployRequest{Pool: "green"}, nil); err != nil {
		t.Fatal(err)
	}
	blue := poolOf(t, m, "web", "blue")
	waitPool(t, m, "web", "blue", func() bool { return blue.Targets()[0].ConsecutivePasses() >= 2 })
	res, err := m.Rollback(ctx, admin.RollbackRequest{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pool != "blue" || res.From != "green" || res.TimeToHealthy != 0 {
		t.Fatalf("rollback to a steady pool: %+v; want no health wait", res)
	}
	// Green fails now: a rollback to it probes and is refused.
	g1.status.Store(http.StatusInternalServerError)
	green := poolOf(t, m, "web", "green")
	waitPool(t, m, "web", "green", func() bool { return green.Targets()[0].State() == upstream.Down })
	_, err = m.Rollback(ctx, admin.RollbackRequest{Timeout: admin.Duration(300 * time.Millisecond)}, nil)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindUnhealthy || !strings.Contains(err.Error(), "500") {
		t.Fatalf("rollback to a failing pool: %v", err)
	}
	if got := livePool(t, m); got != "blue" {
		t.Fatalf("live pool %q after a refused rollback", got)
	}
	// Healthy again while a rollback waits: it waits for fresh passes and
	// switches. (Green recovers only once the rollback is waiting: set
	// healthy first, the checker could make it steady before the call.)
	ev := newEvents()
	type result struct {
		res *admin.DeployResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := m.Rollback(ctx, admin.RollbackRequest{Timeout: admin.Duration(10 * time.Second)}, ev.fn)
		done <- result{res, err}
	}()
	ev.waitPhase(t, admin.PhaseHealth, nil)
	g1.status.Store(http.StatusOK)
	r := <-done
	if r.err != nil || r.res.Pool != "green" || r.res.TimeToHealthy <= 0 {
		t.Fatalf("rollback after recovery: %+v, %v", r.res, r.err)
	}
}

func TestDeployCanceledBeforeSwitch(t *testing.T) {
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	g1.status.Store(http.StatusServiceUnavailable)
	m := startManager(t, testConfig(t, t.TempDir(), addrs(b1), addrs(g1)))
	ctx, cancel := context.WithCancel(context.Background())
	ev := newEvents()
	errc := make(chan error, 1)
	go func() {
		_, err := m.Deploy(ctx, admin.DeployRequest{Pool: "green"}, ev.fn)
		errc <- err
	}()
	ev.waitPhase(t, admin.PhaseHealth, func(e admin.Event) bool { return e.Target != nil })
	cancel()
	err := <-errc
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindCanceled {
		t.Fatalf("canceled deploy: %v", err)
	}
	if got := livePool(t, m); got != "blue" {
		t.Fatalf("live pool %q", got)
	}
	// The service is free again.
	g1.status.Store(http.StatusOK)
	if _, err := m.Deploy(context.Background(), admin.DeployRequest{Pool: "green"}, nil); err != nil {
		t.Fatalf("deploy after a canceled one: %v", err)
	}
}

func TestCloseStopsAWaitingDeploy(t *testing.T) {
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	g1.status.Store(http.StatusServiceUnavailable)
	m := startManager(t, testConfig(t, t.TempDir(), addrs(b1), addrs(g1)))
	ev := newEvents()
	errc := make(chan error, 1)
	go func() {
		_, err := m.Deploy(context.Background(), admin.DeployRequest{Pool: "green"}, ev.fn)
		errc <- err
	}()
	ev.waitPhase(t, admin.PhaseHealth, func(e admin.Event) bool { return e.Target != nil })
	m.Close()
	err := <-errc
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindCanceled || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("deploy when the manager closes: %v", err)
	}
	if got := livePool(t, m); got != "blue" {
		t.Fatalf("live pool %q", got)
	}
}
