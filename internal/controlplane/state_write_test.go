package controlplane

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/testutil/rofs"
)

// A switch whose state cannot be written does not happen: the deploy is
// refused with the write error, traffic stays, and a restart serves what
// was live (issue 9, item 3).
func TestUnwritableStateRefusesTheSwitch(t *testing.T) {
	dir := t.TempDir()
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	cfg := testConfig(t, dir, addrs(b1), addrs(g1))
	m := startManager(t, cfg)
	ctx := context.Background()
	if _, err := m.Deploy(ctx, admin.DeployRequest{Pool: "green"}, nil); err != nil {
		t.Fatal(err)
	}
	undo := rofs.Make(t, dir)

	for _, op := range []struct {
		name string
		run  func() error
	}{
		{"deploy", func() error { _, err := m.Deploy(ctx, admin.DeployRequest{Pool: "blue"}, nil); return err }},
		{"rollback", func() error { _, err := m.Rollback(ctx, admin.RollbackRequest{}, nil); return err }},
		{"reload", func() error { return m.Reload(reloadConfig(t, cfg, func(*config.Config) {})) }},
	} {
		err := op.run()
		var ce *admin.Error
		if !errors.As(err, &ce) || ce.Kind != admin.KindState {
			t.Fatalf("%s with an unwritable state_dir: %v, want KindState", op.name, err)
		}
		if !strings.Contains(err.Error(), dir) {
			t.Errorf("%s refusal does not name the state folder %s: %v", op.name, dir, err)
		}
		if got := livePool(t, m); got != "green" {
			t.Fatalf("after a refused %s requests go to %q, want green", op.name, got)
		}
	}
	if m.StateProblem() == "" {
		t.Error("StateProblem empty while the state cannot be written")
	}
	st, _ := m.Status("web")
	if st[0].Active != "green" || st[0].Previous != "blue" {
		t.Fatalf("status after refusals: active %q previous %q", st[0].Active, st[0].Previous)
	}

	// Writable again: the next change works and clears the problem.
	undo()
	if _, err := m.Rollback(ctx, admin.RollbackRequest{}, nil); err != nil {
		t.Fatalf("rollback once the state is writable: %v", err)
	}
	if p := m.StateProblem(); p != "" {
		t.Errorf("StateProblem after a good write: %s", p)
	}
	saved, err := state.Load(state.Path(dir))
	if err != nil || saved.Services["web"].Active != "blue" {
		t.Fatalf("state after rollback: %+v, %v", saved, err)
	}
}

// The switch itself writes first: a state file that cannot be replaced at
// the moment of the switch (here a folder in its place, after the early
// check passed) refuses the switch.
func TestSwitchWritesStateBeforeItApplies(t *testing.T) {
	dir := t.TempDir()
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	g1.status.Store(http.StatusServiceUnavailable)
	m := startManager(t, testConfig(t, dir, addrs(b1), addrs(g1)))
	ev := newEvents()
	done := make(chan error, 1)
	go func() {
		_, err := m.Deploy(context.Background(), admin.DeployRequest{Pool: "green", Timeout: admin.Duration(10 * time.Second)}, ev.fn)
		done <- err
	}()
	ev.waitPhase(t, admin.PhaseHealth, nil)
	// Rename over a non-empty folder fails, for root too.
	if err := os.MkdirAll(filepath.Join(state.Path(dir), "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	g1.status.Store(http.StatusOK)
	err := <-done
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindState || !strings.Contains(err.Error(), `live traffic stays on "blue"`) {
		t.Fatalf("deploy whose state write fails: %v, want admin.KindState naming blue", err)
	}
	if got := livePool(t, m); got != "blue" {
		t.Fatalf("after the failed write requests go to %q, want blue", got)
	}
}

// A refused deploy with --target changes nothing: the pool keeps its
// targets, a new pool is not created, nothing is persisted, and a later
// rollback cannot put the refused targets live (issue 9, item 4).
func TestRefusedDeployLeavesNothingBehind(t *testing.T) {
	dir := t.TempDir()
	b1, g1, g2 := newBackend(t, "b1"), newBackend(t, "g1"), newBackend(t, "g2")
	m := startManager(t, testConfig(t, dir, addrs(b1), addrs(g1)))
	ctx := context.Background()
	dead := deadAddr(t)

	// Unhealthy new targets for an existing pool, and for a new pool.
	for _, pool := range []string{"green", "purple"} {
		_, err := m.Deploy(ctx, admin.DeployRequest{Pool: pool, Targets: []string{dead}, Timeout: admin.Duration(300 * time.Millisecond)}, nil)
		var ce *admin.Error
		if !errors.As(err, &ce) || ce.Kind != admin.KindUnhealthy {
			t.Fatalf("deploy %s to a dead target: %v, want KindUnhealthy", pool, err)
		}
	}
	// A state that cannot be written refuses before any target is set.
	undo := rofs.Make(t, dir)
	_, err := m.Deploy(ctx, admin.DeployRequest{Pool: "green", Targets: addrs(g2)}, nil)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindState {
		t.Fatalf("deploy with targets and an unwritable state: %v, want KindState", err)
	}
	undo()

	st, _ := m.Status("web")
	if len(st[0].Pools) != 2 {
		t.Fatalf("pools after refused deploys: %+v, want blue and green only", st[0].Pools)
	}
	green := st[0].Pools[1]
	if green.Name != "green" || green.Source != admin.SourceConfig || len(green.Targets) != 1 || green.Targets[0].Addr != g1.addr() {
		t.Fatalf("green after refused deploys: %+v, want its configured target %s", green, g1.addr())
	}
	if _, err := os.Stat(state.Path(dir)); !os.IsNotExist(err) {
		t.Fatalf("refused deploys wrote the state file (%v)", err)
	}
	// green still deploys with its own target; rollback returns to blue.
	if _, err := m.Deploy(ctx, admin.DeployRequest{Pool: "green"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := livePool(t, m); got != "green" {
		t.Fatalf("live %q, want green", got)
	}
	if p := poolOf(t, m, "web", "green"); len(p.Targets()) != 1 || p.Targets()[0].Addr() != g1.addr() {
		t.Fatalf("live green targets %v, want %s", p.Targets(), g1.addr())
	}
}
