package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/controlplane/rules"
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
	if err := rules.PoolName(req.Pool); err != nil {
		return nil, err
	}
	specs := specsOf(req.Targets)
	if err := checkSpecs(specs); err != nil {
		return nil, err
	}
	plan, err := planTrial(req)
	if err != nil {
		return nil, err
	}
	if req.Preview && plan != nil {
		return nil, errorf(admin.KindInvalid, "--preview puts %q behind the preview hosts only, so --canary and --guard do not apply — preview first, then cutover promote, or deploy with --canary", req.Pool)
	}
	if err := checkStopOld(req, plan != nil); err != nil {
		return nil, err
	}
	timeout := opTimeout(req.Timeout)

	m.mu.Lock()
	s, err := m.freeServiceLocked(req.Service, admin.OpDeploy, func(*service) string { return req.Pool })
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	if err := (rules.Deploy{Service: s.name, Pool: req.Pool, Expect: req.Expect, Preview: req.Preview, Trial: plan != nil}).Check(s.desired); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	if err := m.canStopLocked(s, req); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	if req.Preview && len(s.cfg.Load().PreviewHosts) == 0 {
		m.mu.Unlock()
		return nil, errorf(admin.KindRefused, "service %q has no preview_hosts, so a preview of %q could not be reached — add services.%s.preview_hosts: [preview.example.com] to the configuration and reload", s.name, req.Pool, s.name)
	}
	p, exists := s.pools[req.Pool]
	if active := s.pools[s.desired.Active]; active != nil && s.desired.Active == req.Pool {
		same := len(specs) == 0 || sameAddrs(active.up.Targets(), req.Targets)
		m.mu.Unlock()
		if !same {
			return nil, rules.ActiveTargets(s.name, req.Pool, idleNames(s, req.Pool))
		}
		return rules.NoOp(s.name, req.Pool), nil
	}
	if !exists && len(specs) == 0 {
		m.mu.Unlock()
		return nil, errorf(admin.KindNotFound, "service %q has no pool %q — the pools are: %s; to create it, give its targets: cutover deploy %s --target HOST:PORT ...",
			s.name, req.Pool, strings.Join(poolNames(s), ", "), req.Pool)
	}
	if err := m.checkWritable(); err != nil {
		m.mu.Unlock()
		return nil, stateRefusal(admin.OpDeploy, s.name, req.Pool, s.desired.Active, err)
	}
	op := &admin.Operation{Kind: admin.OpDeploy, Service: s.name, Pool: req.Pool, Started: time.Now()}
	m.ops[s.name] = op
	// A trial (canary, guard) keeps the operation until it is over, which
	// may be after this call returns; it ends the operation itself.
	trialStarted := false
	defer func() {
		if !trialStarted {
			m.endOp(s.name)
		}
	}()

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
	li := state.Intent{Kind: admin.OpDeploy, Pool: req.Pool}
	if plan != nil {
		li.Trial = plan.String()
	}
	intent, release, err := m.lockShared(ctx, s, li, specs, progress)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !trialStarted {
			release()
		}
	}()
	if err := m.waitHealthy(ctx, s, p, admin.OpDeploy, timeout, progress); err != nil {
		m.log.Warn("deploy refused", "service", s.name, "pool", req.Pool, "error", err.Error())
		return nil, err
	}
	if err := m.awaitInstances(ctx, s, intent, start.Add(timeout), progress); err != nil {
		m.log.Warn("deploy refused", "service", s.name, "pool", req.Pool, "error", err.Error())
		return nil, err
	}
	if req.Preview {
		return m.preview(ctx, s, p, cand != nil, time.Since(start), progress)
	}
	if plan != nil {
		// The trial installs a candidate at its first step, before it
		// lets this call return; the deferred discard then leaves it.
		if err := m.beginTrial(s, req.Pool); err != nil {
			return nil, err
		}
		trialStarted = true
		return m.runTrial(ctx, s, p, plan, heldLock{id: intent.ID, release: release}, len(specs) > 0, req.Expect, time.Since(start), progress)
	}
	return m.switchTo(ctx, s, p, switchOptions{kind: admin.OpDeploy, candidate: cand != nil, expect: req.Expect, took: time.Since(start), stopOld: req.StopOld}, progress)
}

// expected: see rules.Expected.
func expected(kind, service, to, expect, active string) error {
	return rules.Expected(kind, service, to, expect, active)
}

func orNone(pool string) string { return rules.OrNone(pool) }

// stateRefusal is the error of an operation refused because the state
// cannot be written.
func stateRefusal(kind, service, pool, live string, err error) *admin.Error {
	return errorf(admin.KindState, "%s of service %q to pool %q refused: %v — live traffic stays on %q; retry once the state can be written",
		kind, service, pool, err, orNone(live))
}

// changeRefusal is the error of an operation whose change was refused:
// by its own check (an *admin.Error), by another writer that committed
// first, or by a store that cannot be written.
func changeRefusal(kind, service, pool, live string, err error) *admin.Error {
	var ce *admin.Error
	if errors.As(err, &ce) {
		return ce
	}
	if errors.Is(err, state.ErrConflict) {
		return errorf(admin.KindRefused, "%s of service %q to pool %q refused: %v — live traffic stays on %q", kind, service, pool, err, orNone(live))
	}
	return stateRefusal(kind, service, pool, live, err)
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
	s, err := m.freeServiceLocked(req.Service, admin.OpRollback, func(s *service) string { return s.desired.Previous })
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	prev, err := rules.Rollback(s.desired, s.name, req.Expect)
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	p := s.pools[prev]
	if p == nil || len(p.up.Targets()) == 0 {
		m.mu.Unlock()
		return nil, errorf(admin.KindRefused, "the previous pool %q of service %q has no targets — deploy a pool with targets instead", prev, s.name)
	}
	if err := m.checkWritable(); err != nil {
		m.mu.Unlock()
		return nil, stateRefusal(admin.OpRollback, s.name, prev, s.desired.Active, err)
	}
	op := &admin.Operation{Kind: admin.OpRollback, Service: s.name, Pool: prev, Started: time.Now()}
	m.ops[s.name] = op
	defer m.endOp(s.name)
	m.mu.Unlock()

	m.log.Info("rollback started", "service", s.name, "pool", prev)
	intent, release, err := m.lockShared(ctx, s, state.Intent{Kind: admin.OpRollback, Pool: prev}, nil, progress)
	if err != nil {
		return nil, err
	}
	defer release()
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
	if err := m.awaitInstances(ctx, s, intent, time.Now().Add(timeout), progress); err != nil {
		m.log.Warn("rollback refused", "service", s.name, "pool", prev, "error", err.Error())
		return nil, err
	}
	return m.switchTo(ctx, s, p, switchOptions{kind: admin.OpRollback, expect: req.Expect, took: took}, progress)
}

// opTimeout is a request's health-wait timeout, or the default.
func opTimeout(d admin.Duration) time.Duration { return rules.Timeout(d) }

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
	if t := s.trial; t != nil {
		what := "a guard watching " + fmt.Sprintf("%q", t.pool)
		if d := s.desired; d.Canary == t.pool {
			what = fmt.Sprintf("a canary of %q taking %s of the clients", t.pool, pctOf(d.Weight))
		}
		return nil, errorf(admin.KindBusy, "%s of service %q to pool %q refused: %s is running — cutover promote (the full switch) or cutover abort (back to %q) ends it",
			kind, s.name, pool(s), what, s.desired.Active)
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
	// A stop that came due while the operation ran waits for it.
	for _, s := range m.services {
		if s.name == service {
			m.armStopsLocked(s)
		}
	}
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
	// Close stops the checkers; the wait must not outlive them.
	stopped := m.runCtx.Done()
	m.mu.Unlock()
	if err := m.restartCheckers(wctx, p); err != nil && ctx.Err() != nil {
		return m.canceled(kind, s.name, name)
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
			m.mu.Lock()
			live := orNone(s.desired.Active)
			m.mu.Unlock()
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

// restartCheckers restarts the checks of every target of p at once
// (fresh counts, a probe now); each waits for its probe in progress.
func (m *Manager) restartCheckers(ctx context.Context, p *pool) error {
	m.mu.Lock()
	var checkers []*runningChecker
	for _, rc := range p.checkers {
		checkers = append(checkers, rc)
	}
	m.mu.Unlock()
	errs := make(chan error, len(checkers))
	for _, rc := range checkers {
		go func() { errs <- rc.c.Restart(ctx) }()
	}
	var first error
	for range checkers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
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

// switchOptions say how a pool is switched to.
type switchOptions struct {
	kind string // admin.OpDeploy or admin.OpRollback
	// candidate: p is a deploy's candidate pool, which takes the place of
	// the pool of its name at the switch.
	candidate bool
	// expect is the pool the caller expects to be active ("" any).
	expect string
	took   time.Duration // the health wait
	// stopOld schedules the stop of the pool that was active this long
	// after the switch (nil: none; see admin.DeployRequest.StopOld).
	stopOld *admin.Duration
}

// switchTo makes p the stable pool and drains the pool that lost its
// traffic. The next desired state is committed first: when it cannot be,
// nothing switches and the operation is refused.
func (m *Manager) switchTo(ctx context.Context, s *service, p *pool, o switchOptions, progress func(admin.Event)) (*admin.DeployResult, error) {
	name := p.up.Name()
	sw := rules.Switch{Kind: o.kind, Service: s.name, Pool: name, Expect: o.expect}
	if o.candidate {
		sw.Targets = p.runtime
	}
	if o.stopOld != nil {
		sw.StopOldAt = time.Now().Add(time.Duration(*o.stopOld))
	}
	prev, ap, err := m.change(ctx, s, sw.Next, func() {
		if o.candidate {
			m.installCandidateLocked(s, p)
		}
	})
	switchedAt := ap.at
	if err != nil {
		m.log.Error(o.kind+" refused at the switch", "service", s.name, "pool", name, "error", err)
		return nil, changeRefusal(o.kind, s.name, name, prev.Active, err)
	}
	res := &admin.DeployResult{
		Service: s.name, Operation: o.kind, Pool: name,
		TimeToHealthy: admin.Duration(o.took), SwitchedAt: switchedAt,
	}
	from := prev.Active
	if from == "" || from == name {
		res.Message = fmt.Sprintf("service %q now served by pool %q", s.name, name)
		return res, nil
	}
	m.metrics.Switched(s.name, o.kind, o.took)
	res.From = from
	if at, ok := m.stopAt(s, from); ok {
		res.StopsAt = &at
	}
	var atSwitch int64
	for _, p := range ap.lost {
		atSwitch += p.InFlight()
	}
	progress(m.event(s.name, name, admin.PhaseSwitch, fmt.Sprintf("switched service %q from %q to %q (%s in flight on %q)",
		s.name, from, name, human.Count(int(atSwitch), "request"), from)))
	d := m.drain(ctx, s, ap.lost, switchedAt, progress, name)
	res.InFlightAtSwitch, res.Drained, res.ClosedAtTimeout, res.ConnsClosed, res.TimeToDrain, res.Goodbyes =
		d.inFlight, d.drained, d.closed, d.conns, admin.Duration(d.took), d.goodbyes
	m.metrics.Drained(s.name, d.took, res.Drained)
	res.Message = fmt.Sprintf("service %q switched from %q to %q: healthy after %s, %s drained in %s",
		s.name, from, name, human.Duration(o.took), human.Count(int(res.Drained), "in-flight request"), human.Duration(d.took))
	if d.closed > 0 {
		res.Message += fmt.Sprintf(", %d closed at the drain timeout", d.closed)
	}
	if res.StopsAt != nil {
		res.Message += "; " + stopNote(from, *res.StopsAt)
	}
	level := slog.LevelInfo
	if d.closed > 0 || len(res.Warnings) > 0 {
		level = slog.LevelWarn
	}
	m.log.LogAttrs(context.Background(), level, o.kind+" done",
		slog.String("service", s.name), slog.String("from", from), slog.String("to", name),
		slog.Duration("time_to_healthy", human.Duration(o.took)), slog.Int64("in_flight_at_switch", res.InFlightAtSwitch),
		slog.Int64("drained", res.Drained), slog.Int64("closed_at_timeout", res.ClosedAtTimeout),
		slog.Int64("goodbyes", res.Goodbyes),
		slog.Duration("time_to_drain", human.Duration(d.took)))
	return res, nil
}

// drained is what a drain of the pools that lost traffic did.
type drained struct {
	inFlight, drained, closed int64 // requests at the swap, finished, ended at the timeout
	conns                     int   // upstream connections closed at the timeout
	goodbyes                  int64 // long-lived connections closed cleanly before the timeout
	took                      time.Duration
}

// drain lets the requests running on each pool that lost its traffic (all
// of it, or the share it served) finish there, up to the service's
// drain_timeout; those still running then are ended by closing their
// upstream connections. The pools drain at once, each under its own
// deadline. It returns when every one is done. to names the pool switched
// to, for the progress events.
func (m *Manager) drain(ctx context.Context, s *service, lost []*upstream.Pool, swapped time.Time, progress func(admin.Event), to string) drained {
	var d drained
	if len(lost) == 0 {
		return d
	}
	sc := s.cfg.Load()
	timeout := sc.DrainTimeout
	// The drain is not cut short by the caller going away: the switch has
	// happened, and ending the old pools' requests early would fail them.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	deadline, _ := dctx.Deadline()
	type one struct {
		inFlight, remaining, goodbyes int64
		conns                         int
	}
	results := make([]one, len(lost))
	var wg sync.WaitGroup
	for i, p := range lost {
		results[i].inFlight = p.InFlight()
		progress(m.event(s.name, to, admin.PhaseDrain, fmt.Sprintf("draining %q: waiting up to %s for its %s to finish", p.Name(), timeout, human.Count(int(results[i].inFlight), "request"))))
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Long-lived connections (WebSockets, event streams) would run
			// until the timeout cuts them: they are told goodbye, a few at a
			// time, over the end of the window, and close the way their
			// clients reconnect on.
			bye := upstream.SayGoodbye(p.Targets(), deadline, sc.CloseSpread())
			results[i].remaining = p.Drain(dctx)
			results[i].goodbyes = bye.Stop()
			if results[i].remaining > 0 {
				results[i].conns = p.CloseAll()
			}
			p.CloseIdle()
		}()
	}
	wg.Wait()
	d.took = time.Since(swapped)
	for i, p := range lost {
		r := results[i]
		d.inFlight += r.inFlight
		d.closed += r.remaining
		d.conns += r.conns
		d.goodbyes += r.goodbyes
		if r.goodbyes > 0 {
			progress(m.event(s.name, to, admin.PhaseDrain, fmt.Sprintf("closed %s on %q cleanly over the last %s of the drain (WebSockets with a close frame, event streams at an event's end), for their clients to reconnect",
				human.Count(int(r.goodbyes), "long-lived connection"), p.Name(), human.Duration(sc.CloseSpread()))))
		}
		if r.remaining > 0 {
			progress(m.event(s.name, to, admin.PhaseDrain, fmt.Sprintf("drain timeout (%s) passed: ended %s still running on %q by closing %s",
				timeout, human.Count(int(r.remaining), "request"), p.Name(), human.Count(r.conns, "upstream connection"))))
		} else {
			progress(m.event(s.name, to, admin.PhaseDrain, fmt.Sprintf("drained %q: %s finished in %s", p.Name(), human.Count(int(r.inFlight), "request"), human.Duration(d.took))))
		}
	}
	d.drained = max(d.inFlight-d.closed, 0)
	return d
}

func (m *Manager) event(service, pool, phase, msg string) admin.Event {
	return admin.Event{Time: time.Now(), Service: service, Pool: pool, Phase: phase, Message: msg}
}

// preview makes p the pool of the service's preview hosts: its live
// traffic does not move. A pool that was the preview before drains.
func (m *Manager) preview(ctx context.Context, s *service, p *pool, candidate bool, took time.Duration, progress func(admin.Event)) (*admin.DeployResult, error) {
	name := p.up.Name()
	var targets []upstream.TargetSpec
	if candidate {
		targets = p.runtime
	}
	prev, ap, err := m.change(ctx, s, func(cur state.Service) (state.Service, error) {
		return rules.Preview(cur, name, targets), nil
	}, func() {
		if candidate {
			m.installCandidateLocked(s, p)
		}
	})
	if err != nil {
		return nil, changeRefusal(admin.OpDeploy, s.name, name, prev.Active, err)
	}
	swapped := ap.at
	hosts := strings.Join(s.cfg.Load().PreviewHosts, ", ")
	progress(m.event(s.name, name, admin.PhaseSwitch, fmt.Sprintf("%q is the preview of service %q: %s go to it; live traffic stays on %q", name, s.name, hosts, prev.Active)))
	d := m.drain(ctx, s, ap.lost, swapped, progress, name)
	return &admin.DeployResult{Service: s.name, Operation: admin.OpDeploy, Pool: prev.Active, From: prev.Active, Preview: name,
		TimeToHealthy: admin.Duration(took), SwitchedAt: swapped, Drained: d.drained, TimeToDrain: admin.Duration(d.took),
		Message: fmt.Sprintf("%q is the preview of service %q (%s); live traffic stays on %q — cutover promote makes it live, cutover abort drops it", name, s.name, hosts, prev.Active)}, nil
}
