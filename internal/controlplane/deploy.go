package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/human"
)

// deploy (see Deploy, which records it) switches a service to a pool: it sets the pool's targets when the
// request gives some, health-checks every target of the pool afresh until
// each has passed health.healthy consecutive probes, makes the pool active
// in one atomic step, writes the state file, and drains the pool that was
// active: requests running on it finish, up to the service's drain_timeout,
// after which the ones still running are ended by closing their upstream
// connections. Deploy returns when the drain is over, so once it has
// returned no request is running on the old pool. The old pool stays
// configured and health-checked, warm for a rollback.
//
// progress (may be nil) receives each step as it happens, on the calling
// goroutine.
//
// The state is written before the switch, so a restart serves what was
// switched to; when it cannot be written the deploy is refused. A deploy
// that fails or is refused changes nothing: live traffic stays, and targets
// the request gave are dropped (they are checked in a candidate pool that
// takes the pool's place only at the switch).
//
// Only one deploy or rollback per service runs at a time; another one is
// refused at once with an error of admin.KindBusy naming the one in progress.
// Cancelling ctx aborts the health wait (nothing switched); once the switch
// has happened the drain runs to its end regardless.
func (m *Manager) deploy(ctx context.Context, req admin.DeployRequest, progress func(admin.Event)) (*admin.DeployResult, error) {
	if progress == nil {
		progress = func(admin.Event) {}
	}
	if req.Pool == "" {
		return nil, errorf(admin.KindInvalid, "no pool given — name the pool to deploy, e.g. cutover deploy green")
	}
	if !config.ValidName(req.Pool) {
		return nil, errorf(admin.KindInvalid, "pool name %q is not valid — use lowercase letters, digits, '-' and '_' (at most 63), e.g. green", req.Pool)
	}
	specs := specsOf(req.Targets)
	if err := checkSpecs(specs); err != nil {
		return nil, err
	}
	timeout := opTimeout(req.Timeout)

	m.mu.Lock()
	s, err := m.freeServiceLocked(req.Service, admin.OpDeploy, func(*service) string { return req.Pool })
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	active := s.rs.Active()
	p, exists := s.pools[req.Pool]
	if active != nil && active.Name() == req.Pool {
		same := len(specs) == 0 || sameAddrs(active.Targets(), req.Targets)
		m.mu.Unlock()
		if !same {
			return nil, errorf(admin.KindRefused, "pool %q is the active pool of service %q: its targets cannot be changed by a deploy — deploy the idle pool (%s) with --target instead, then this one is idle",
				req.Pool, s.name, idleNames(s, req.Pool))
		}
		return &admin.DeployResult{
			Service: s.name, Operation: admin.OpDeploy, NoOp: true, Pool: req.Pool, From: req.Pool,
			Message: fmt.Sprintf("pool %q is already active for service %q: nothing to do", req.Pool, s.name),
		}, nil
	}
	if !exists && len(specs) == 0 {
		m.mu.Unlock()
		return nil, errorf(admin.KindNotFound, "service %q has no pool %q — the pools are: %s; to create it, give its targets: cutover deploy %s --target HOST:PORT ...",
			s.name, req.Pool, strings.Join(poolNames(s), ", "), req.Pool)
	}
	if err := m.checkWritable(); err != nil {
		m.mu.Unlock()
		return nil, stateRefusal(admin.OpDeploy, s, req.Pool, err)
	}
	op := &admin.Operation{Kind: admin.OpDeploy, Service: s.name, Pool: req.Pool, Started: time.Now()}
	m.ops[s.name] = op
	defer m.endOp(s.name)

	// New targets go into a candidate pool that nothing routes to and
	// the registry does not hold: it is health-checked there and takes
	// the pool's place only at the switch, so a refused or failed
	// deploy leaves the pool as it was.
	var cand *pool
	if len(specs) > 0 {
		bal, _ := upstream.ParseBalance(s.cfg.Load().Balance)
		cand = m.makePool(s, req.Pool, bal)
		if exists {
			cand.inConfig, cand.docker, cand.cfgTargets = p.inConfig, p.docker, p.cfgTargets
		}
		cand.runtime = specs
		m.setPoolTargets(cand, specs, upstream.Unknown)
		p = cand
	}
	m.mu.Unlock()
	if cand != nil {
		defer m.discardCandidate(cand)
		what := "set targets of pool"
		if !exists {
			what = "created pool"
		}
		progress(m.event(s.name, req.Pool, admin.PhaseTargets, fmt.Sprintf("%s %q: %s (they take its place at the switch)", what, req.Pool, strings.Join(req.Targets, ", "))))
	}
	m.log.Info("deploy started", "service", s.name, "pool", req.Pool, "timeout", timeout)

	start := time.Now()
	if err := m.waitHealthy(ctx, s, p, admin.OpDeploy, timeout, progress); err != nil {
		m.log.Warn("deploy refused", "service", s.name, "pool", req.Pool, "error", err.Error())
		return nil, err
	}
	return m.switchTo(ctx, s, p, cand != nil, admin.OpDeploy, time.Since(start), progress)
}

// stateRefusal is the error of an operation refused because the state
// cannot be written.
func stateRefusal(kind string, s *service, pool string, err error) *admin.Error {
	live := "none"
	if a := s.rs.Active(); a != nil {
		live = a.Name()
	}
	return errorf(admin.KindState, "%s of service %q to pool %q refused: %v — live traffic stays on %q; make the state writable, then retry",
		kind, s.name, pool, err, live)
}

// rollback (see Rollback, which records it) switches a service back to
// its previous pool. When every target
// of that pool is up and its checks have kept passing, the switch is
// immediate; otherwise the pool is health-checked afresh first, as for a
// deploy. Then the pool that was active is drained, as for a deploy, and
// becomes the previous pool: a second rollback returns to it.
func (m *Manager) rollback(ctx context.Context, req admin.RollbackRequest, progress func(admin.Event)) (*admin.DeployResult, error) {
	if progress == nil {
		progress = func(admin.Event) {}
	}
	timeout := opTimeout(req.Timeout)
	m.mu.Lock()
	s, err := m.freeServiceLocked(req.Service, admin.OpRollback, func(s *service) string { return s.rs.Previous() })
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	prev := s.rs.Previous()
	if prev == "" {
		active := "none"
		if a := s.rs.Active(); a != nil {
			active = a.Name()
		}
		m.mu.Unlock()
		return nil, errorf(admin.KindRefused, "service %q has no previous pool to roll back to (active: %s) — a rollback is possible after a deploy has switched pools", s.name, active)
	}
	p := s.pools[prev]
	if p == nil || len(p.up.Targets()) == 0 {
		m.mu.Unlock()
		return nil, errorf(admin.KindRefused, "the previous pool %q of service %q has no targets — deploy a pool with targets instead", prev, s.name)
	}
	if err := m.checkWritable(); err != nil {
		m.mu.Unlock()
		return nil, stateRefusal(admin.OpRollback, s, prev, err)
	}
	op := &admin.Operation{Kind: admin.OpRollback, Service: s.name, Pool: prev, Started: time.Now()}
	m.ops[s.name] = op
	defer m.endOp(s.name)
	m.mu.Unlock()

	m.log.Info("rollback started", "service", s.name, "pool", prev)
	var took time.Duration
	if steady, _ := poolReady(p, s.settings().Thresholds.Healthy); steady {
		progress(m.event(s.name, prev, admin.PhaseHealth, fmt.Sprintf("every target of %q is up and passing its checks", prev)))
	} else {
		start := time.Now()
		if err := m.waitHealthy(ctx, s, p, admin.OpRollback, timeout, progress); err != nil {
			m.log.Warn("rollback refused", "service", s.name, "pool", prev, "error", err.Error())
			return nil, err
		}
		took = time.Since(start)
	}
	return m.switchTo(ctx, s, p, false, admin.OpRollback, took, progress)
}

// opTimeout is a request's health-wait timeout, or the default.
func opTimeout(d admin.Duration) time.Duration {
	if d <= 0 {
		return admin.DefaultTimeout
	}
	return time.Duration(d)
}

// freeServiceLocked finds the named service for a deploy or rollback (kind)
// and checks that the control plane runs and that no other operation is in
// progress on the service; pool names the pool the operation would switch
// to, for the busy message. m.mu must be held.
func (m *Manager) freeServiceLocked(name, kind string, pool func(*service) string) (*service, error) {
	s, err := m.serviceLocked(name)
	if err != nil {
		return nil, err
	}
	if err := m.checkRunningLocked(); err != nil {
		return nil, err
	}
	if op := m.ops[s.name]; op != nil {
		return nil, busy(kind, s.name, pool(s), op)
	}
	return s, nil
}

func (m *Manager) checkRunningLocked() error {
	if m.closed {
		return errorf(admin.KindRefused, "cutover is shutting down")
	}
	if m.runCtx == nil {
		return errorf(admin.KindInternal, "the control plane is not started (no health checks run), so nothing can be deployed")
	}
	return nil
}

func (m *Manager) endOp(service string) {
	m.mu.Lock()
	delete(m.ops, service)
	m.mu.Unlock()
}

func busy(kind, service, pool string, running *admin.Operation) *admin.Error {
	return errorf(admin.KindBusy, "%s of service %q to pool %q refused: a %s is in progress — wait for it to finish, then retry",
		kind, service, pool, running)
}

func idleNames(s *service, active string) string {
	var names []string
	for _, n := range poolNames(s) {
		if n != active {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "a new pool name"
	}
	return strings.Join(names, " or ")
}

func sameAddrs(ts []*upstream.Target, addrs []string) bool {
	if len(ts) != len(addrs) {
		return false
	}
	have := make([]string, len(ts))
	for i, t := range ts {
		have[i] = t.Addr()
	}
	want := slices.Clone(addrs)
	slices.Sort(have)
	slices.Sort(want)
	return slices.Equal(have, want)
}

// targetReady is the deploy gate for one target: up, with a run of at
// least needed passing probes since the checks were restarted.
func targetReady(t *upstream.Target, needed int) bool {
	return t.State() == upstream.Up && t.ConsecutivePasses() >= needed
}

// poolReady reports whether every target of p is ready, and the progress
// of each.
func poolReady(p *pool, needed int) (bool, []admin.TargetProgress) {
	ts := p.up.Targets()
	all := len(ts) > 0
	out := make([]admin.TargetProgress, len(ts))
	for i, t := range ts {
		st := t.Status()
		passes := t.ConsecutivePasses()
		ready := st.State == upstream.Up.String() && passes >= needed
		out[i] = admin.TargetProgress{Addr: st.Addr, Label: labelIfDifferent(st), State: st.State,
			Passes: min(passes, needed), Needed: needed, Ready: ready, Error: st.LastError}
		all = all && ready
	}
	return all, out
}

func labelIfDifferent(st upstream.Status) string {
	if st.Label == st.Addr {
		return ""
	}
	return st.Label
}

// waitHealthy restarts the checks of every target of p (fresh counts, a
// probe at once, then one every interval) and waits until every target is
// ready, reporting each target's progress as it changes.
func (m *Manager) waitHealthy(ctx context.Context, s *service, p *pool, kind string, timeout time.Duration, progress func(admin.Event)) error {
	settings := s.settings()
	needed := settings.Thresholds.Healthy
	name := p.up.Name()
	if len(p.up.Targets()) == 0 {
		return errorf(admin.KindRefused, "pool %q of service %q has no targets — give them with --target HOST:PORT", name, s.name)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	m.mu.Lock()
	var checkers []*runningChecker
	for _, rc := range p.checkers {
		checkers = append(checkers, rc)
	}
	// Close stops the checkers; the wait must not outlive them.
	stopped := m.runCtx.Done()
	m.mu.Unlock()
	// Restart all at once: each waits for its probe in progress, if any.
	errs := make(chan error, len(checkers))
	for _, rc := range checkers {
		go func() { errs <- rc.c.Restart(wctx) }()
	}
	for range checkers {
		if err := <-errs; err != nil && ctx.Err() != nil {
			return m.canceled(kind, s.name, name)
		}
	}

	progress(m.event(s.name, name, admin.PhaseHealth, fmt.Sprintf("checking %s of %q: GET %s every %s, %s needed, timeout %s",
		human.Count(len(p.up.Targets()), "target"), name, settings.Path, settings.Interval, human.Count(needed, "pass", "passes"), human.Duration(timeout))))
	last := map[string]admin.TargetProgress{}
	for {
		wake := p.changed.Wait()
		ok, targets := poolReady(p, needed)
		ready := 0
		for _, tp := range targets {
			if tp.Ready {
				ready++
			}
		}
		for _, tp := range targets {
			// Report what a person sees change: readiness, passes, error.
			key := tp
			key.State = ""
			if prev, seen := last[tp.Addr]; seen && prev == key {
				continue
			}
			last[tp.Addr] = key
			tp := tp
			progress(admin.Event{
				Time: time.Now(), Service: s.name, Pool: name, Phase: admin.PhaseHealth,
				Message: describeProgress(tp, ready, len(targets)), Target: &tp, Ready: ready, Total: len(targets),
			})
		}
		if ok {
			return nil
		}
		select {
		case <-wake:
		case <-deadline.C:
			_, targets := poolReady(p, needed)
			var failing []admin.TargetProgress
			for _, tp := range targets {
				if !tp.Ready {
					failing = append(failing, tp)
				}
			}
			live := "none"
			if a := s.rs.Active(); a != nil {
				live = a.Name()
			}
			return &admin.Error{
				Kind: admin.KindUnhealthy,
				Message: fmt.Sprintf("%s of service %q to pool %q refused: %d of %s not healthy within %s — live traffic stays on %q",
					kind, s.name, name, len(failing), human.Count(len(targets), "target"), human.Duration(timeout), live),
				Failing: failing,
			}
		case <-ctx.Done():
			return m.canceled(kind, s.name, name)
		case <-stopped:
			return errorf(admin.KindCanceled, "%s of service %q to pool %q stopped: cutover is shutting down — live traffic untouched", kind, s.name, name)
		}
	}
}

func (m *Manager) canceled(kind, service, pool string) *admin.Error {
	return errorf(admin.KindCanceled, "%s of service %q to pool %q canceled before the switch — live traffic untouched", kind, service, pool)
}

func describeProgress(tp admin.TargetProgress, ready, total int) string {
	name := tp.Addr
	if tp.Label != "" {
		name = fmt.Sprintf("%s (%s)", tp.Label, tp.Addr)
	}
	var what string
	switch {
	case tp.Ready:
		what = fmt.Sprintf("ready (%d/%d checks passed)", tp.Passes, tp.Needed)
	case tp.Error != "":
		what = fmt.Sprintf("not ready: %s (%d/%d checks passed)", tp.Error, tp.Passes, tp.Needed)
	default:
		what = fmt.Sprintf("not ready yet (%d/%d checks passed)", tp.Passes, tp.Needed)
	}
	return fmt.Sprintf("%s %s — %d of %s ready", name, what, ready, human.Count(total, "target"))
}

// switchTo makes p active and drains the pool that was active. The state
// is written first: when it cannot be, nothing switches and the operation
// is refused. A candidate p (deploy --target) takes the place of the pool
// of its name in the same step.
func (m *Manager) switchTo(ctx context.Context, s *service, p *pool, candidate bool, kind string, took time.Duration, progress func(admin.Event)) (*admin.DeployResult, error) {
	name := p.up.Name()
	var old *upstream.Pool
	ok := false
	err := m.commit(func(st *state.State) {
		ss := st.Services[s.name]
		if ss.Active != name && ss.Active != "" {
			ss.Previous = ss.Active
		}
		ss.Active = name
		if candidate {
			ss.SetTargets(name, p.runtime)
		}
		st.Services[s.name] = ss
	}, func() {
		if candidate {
			m.installCandidateLocked(s, p)
		}
		old, ok = s.rs.Activate(name)
	})
	switchedAt := time.Now()
	if err != nil {
		m.log.Error(kind+" refused: the state cannot be written", "service", s.name, "pool", name, "error", err)
		return nil, stateRefusal(kind, s, name, err)
	}
	if !ok {
		// The pool left between the health wait and now; reloads are
		// refused during a deploy, so this is a bug.
		return nil, errorf(admin.KindInternal, "pool %q of service %q vanished before the switch — live traffic untouched", name, s.name)
	}
	res := &admin.DeployResult{
		Service: s.name, Operation: kind, Pool: name,
		TimeToHealthy: admin.Duration(took), SwitchedAt: switchedAt,
	}
	if old == nil || old == p.up {
		res.Message = fmt.Sprintf("service %q now served by pool %q", s.name, name)
		return res, nil
	}
	m.metrics.Switched(s.name, kind, took)
	res.From = old.Name()
	res.InFlightAtSwitch = old.InFlight()
	progress(m.event(s.name, name, admin.PhaseSwitch, fmt.Sprintf("switched service %q from %q to %q (%s in flight on %q)",
		s.name, old.Name(), name, human.Count(int(res.InFlightAtSwitch), "request"), old.Name())))

	sc := s.cfg.Load()
	drainTimeout := sc.DrainTimeout
	progress(m.event(s.name, name, admin.PhaseDrain, fmt.Sprintf("draining %q: waiting up to %s for its requests to finish", old.Name(), drainTimeout)))
	// The drain is not cut short by the caller going away: the switch has
	// happened, and ending the old pool's requests early would fail them.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
	// Long-lived connections (WebSockets, event streams) would run until
	// the timeout cuts them: they are told goodbye, a few at a time, over
	// the end of the window, and close the way their clients reconnect on.
	deadline, _ := dctx.Deadline()
	bye := upstream.SayGoodbye(old.Targets(), deadline, sc.CloseSpread())
	remaining := old.Drain(dctx)
	res.Goodbyes = bye.Stop()
	cancel()
	if remaining > 0 {
		res.ClosedAtTimeout = remaining
		res.ConnsClosed = old.CloseAll()
	}
	old.CloseIdle()
	res.TimeToDrain = admin.Duration(time.Since(switchedAt))
	res.Drained = max(res.InFlightAtSwitch-res.ClosedAtTimeout, 0)
	m.metrics.Drained(s.name, time.Duration(res.TimeToDrain), res.Drained)

	if remaining > 0 {
		progress(m.event(s.name, name, admin.PhaseDrain, fmt.Sprintf("drain timeout (%s) passed: ended %s still running on %q by closing %s",
			drainTimeout, human.Count(int(remaining), "request"), old.Name(), human.Count(int(res.ConnsClosed), "upstream connection"))))
	} else {
		progress(m.event(s.name, name, admin.PhaseDrain, fmt.Sprintf("drained %q: %s finished in %s", old.Name(), human.Count(int(res.Drained), "request"), human.Duration(time.Duration(res.TimeToDrain)))))
	}
	if res.Goodbyes > 0 {
		progress(m.event(s.name, name, admin.PhaseDrain, fmt.Sprintf("closed %s on %q cleanly over the last %s of the drain (WebSockets with a close frame, event streams at an event's end), for their clients to reconnect",
			human.Count(int(res.Goodbyes), "long-lived connection"), old.Name(), human.Duration(sc.CloseSpread()))))
	}
	res.Message = fmt.Sprintf("service %q switched from %q to %q: healthy after %s, %s drained in %s",
		s.name, old.Name(), name, human.Duration(took), human.Count(int(res.Drained), "in-flight request"), human.Duration(time.Duration(res.TimeToDrain)))
	if remaining > 0 {
		res.Message += fmt.Sprintf(", %d closed at the drain timeout", remaining)
	}
	level := slog.LevelInfo
	if remaining > 0 || len(res.Warnings) > 0 {
		level = slog.LevelWarn
	}
	m.log.LogAttrs(context.Background(), level, kind+" done",
		slog.String("service", s.name), slog.String("from", old.Name()), slog.String("to", name),
		slog.Duration("time_to_healthy", human.Duration(took)), slog.Int64("in_flight_at_switch", res.InFlightAtSwitch),
		slog.Int64("drained", res.Drained), slog.Int64("closed_at_timeout", res.ClosedAtTimeout),
		slog.Int64("goodbyes", res.Goodbyes),
		slog.Duration("time_to_drain", human.Duration(time.Duration(res.TimeToDrain))))
	return res, nil
}

func (m *Manager) event(service, pool, phase, msg string) admin.Event {
	return admin.Event{Time: time.Now(), Service: service, Pool: pool, Phase: phase, Message: msg}
}
