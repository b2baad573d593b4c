package controlplane

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/controlplane/history"
)

// TestHistoryRecordsEveryOutcome drives deploys and rollbacks to each
// outcome and checks what the history says about them, what status shows
// while one runs, and that a restart reads the same history.
func TestHistoryRecordsEveryOutcome(t *testing.T) {
	dir := t.TempDir()
	b1, g1 := newBackend(t, "b1"), newBackend(t, "g1")
	cfg := testConfig(t, dir, addrs(b1), addrs(g1))
	m := startManager(t, cfg)
	ctx := context.Background()
	svc := m.Router().Table().Lookup([]byte("x"))

	// 1. A deploy that drains one request held on blue; status shows the
	// drain with the request left.
	held := svc.Acquire()
	ev := newEvents()
	done := make(chan error, 1)
	go func() {
		_, err := m.Deploy(ctx, admin.DeployRequest{Pool: "green"}, ev.fn)
		done <- err
	}()
	ev.waitPhase(t, admin.PhaseDrain, func(e admin.Event) bool { return strings.Contains(e.Message, "draining") })
	st, _ := m.Status("web")
	op := st[0].Operation
	if op == nil || op.Phase != admin.PhaseDrain || op.DrainLeft != 1 || op.Ready != 1 || op.Total != 1 {
		t.Fatalf("operation during the drain: %+v, want phase drain, 1 left, 1/1 ready", op)
	}
	if h := m.History("web"); len(h) != 1 || !h[0].Running() || h[0].From != "blue" || h[0].To != "green" {
		t.Fatalf("history while the deploy runs: %+v", h)
	}
	held.End()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// 2. The same deploy again: nothing to do.
	if _, err := m.Deploy(ctx, admin.DeployRequest{Pool: "green"}, nil); err != nil {
		t.Fatal(err)
	}

	// 3. A deploy to a new pool whose target is down runs until its
	// timeout; meanwhile status shows 0 of 1 ready, and a rollback is
	// refused as busy.
	dead := deadAddr(t)
	ev = newEvents()
	go func() {
		_, err := m.Deploy(ctx, admin.DeployRequest{Pool: "red", Targets: []string{dead}, Timeout: admin.Duration(time.Second)}, ev.fn)
		done <- err
	}()
	ev.waitPhase(t, admin.PhaseHealth, func(e admin.Event) bool { return e.Target != nil })
	st, _ = m.Status("web")
	if op := st[0].Operation; op == nil || op.Pool != "red" || op.Phase != admin.PhaseHealth || op.Ready != 0 || op.Total != 1 {
		t.Fatalf("operation during the health wait: %+v, want red, phase health, 0/1 ready", op)
	}
	var ce *admin.Error
	if _, err := m.Rollback(ctx, admin.RollbackRequest{}, nil); !errors.As(err, &ce) || ce.Kind != admin.KindBusy {
		t.Fatalf("rollback during a deploy: %v, want busy", err)
	}
	if err := <-done; !errors.As(err, &ce) || ce.Kind != admin.KindUnhealthy {
		t.Fatalf("deploy to a dead pool: %v, want unhealthy", err)
	}

	// 4. A rollback back to blue, 5. one to an unknown service, 6. two reloads.
	if _, err := m.Rollback(ctx, admin.RollbackRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	m.Rollback(ctx, admin.RollbackRequest{Service: "nope"}, nil)
	m.RecordReload(func() error { return nil })
	m.RecordReload(func() error { return errorf(admin.KindBusy, "reload refused: a deploy is in progress") })

	check := func(name string, h []history.Entry) {
		t.Helper()
		type want struct{ kind, service, from, to, result, errKind string }
		wants := []want{ // newest first
			{history.KindReload, "", "", "", history.ResultRefused, string(admin.KindBusy)},
			{history.KindReload, "", "", "", history.ResultSucceeded, ""},
			{history.KindRollback, "nope", "", "", history.ResultRefused, string(admin.KindNotFound)},
			{history.KindRollback, "web", "green", "blue", history.ResultSucceeded, ""},
			{history.KindRollback, "web", "green", "blue", history.ResultRefused, string(admin.KindBusy)},
			{history.KindDeploy, "web", "green", "red", history.ResultTimedOut, string(admin.KindUnhealthy)},
			{history.KindDeploy, "web", "green", "green", history.ResultSucceeded, ""},
			{history.KindDeploy, "web", "blue", "green", history.ResultSucceeded, ""},
		}
		if len(h) != len(wants) {
			t.Fatalf("%s: %d entries, want %d: %+v", name, len(h), len(wants), h)
		}
		for i, w := range wants {
			e := h[i]
			got := want{e.Kind, e.Service, e.From, e.To, e.Result, e.ErrorKind}
			if got != w {
				t.Errorf("%s: entry %d = %+v, want %+v", name, i, got, w)
			}
			if e.Ended == nil || e.Ended.Before(e.Started) || e.Reason == "" {
				t.Errorf("%s: entry %d has no end or reason: %+v", name, i, e)
			}
		}
		first := h[len(h)-1]
		if first.InFlightAtSwitch != 1 || first.Drained != 1 || first.DrainMS <= 0 || first.TimeToHealthyMS <= 0 ||
			len(first.Targets) != 1 || first.Targets[0].Addr != g1.addr() || !first.Targets[0].Ready {
			t.Errorf("%s: the drained deploy: %+v", name, first)
		}
		if !h[len(h)-2].NoOp {
			t.Errorf("%s: the repeated deploy is not a no-op: %+v", name, h[len(h)-2])
		}
		red := h[5]
		if len(red.Targets) != 1 || red.Targets[0].Ready || !strings.Contains(red.Targets[0].Error, "connection refused") ||
			!strings.Contains(red.Reason, "not healthy within") {
			t.Errorf("%s: the timed-out deploy: %+v", name, red)
		}
	}
	check("running", m.History(""))
	if web := m.History("web"); len(web) != 5 {
		t.Errorf("History(web) has %d entries, want 5", len(web))
	}

	// A restart reads the same history.
	m.Close()
	again, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check("after a restart", again.History(""))
}
