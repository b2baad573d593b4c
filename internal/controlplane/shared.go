package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/controlplane/rules"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// What this file adds when the desired state is shared by several
// cutovers (state.Shared, etcd): the changes other instances commit are
// applied here the way a local change is (ApplyStored), a deploy or
// rollback holds the store's deploy lock, and its switch waits until every
// other live instance has checked the pool itself (Announced, prepare,
// awaitInstances).

// preparing is a pool this instance checks for another instance's deploy.
type preparing struct {
	intent state.Intent
	cancel context.CancelFunc
	// cand holds the deploy's new targets (nil: the pool as it is); it
	// takes the pool's place when the switch arrives.
	cand *pool
}

// ApplyStored applies desired states committed through any instance
// (state.Follower): each with a newer revision than the one applied
// becomes the service's desired state in one routing swap, and the pools
// that lost traffic drain, as for a local change.
func (m *Manager) ApplyStored(services map[string]state.Service, full bool) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	for _, s := range m.services {
		d, ok := services[s.name]
		if !ok || d.Revision <= s.desired.Revision {
			continue
		}
		if err := m.syncTargetsLocked(s, d); err != nil {
			m.log.Error("a desired state from the shared store cannot be applied here; this instance keeps serving the one it has",
				"service", s.name, "revision", d.Revision, "store", m.store.Where(), "err", err)
			continue
		}
		from := s.desired.Active
		lost := m.applyLocked(s, d).lost
		m.log.Info("applied the desired state from the shared store", "service", s.name, "revision", d.Revision,
			"active", d.Active, "from", from, "preview", d.Preview, "full_read", full)
		if from != d.Active && from != "" {
			m.metrics.Switched(s.name, "follow", 0)
		}
		if len(lost) > 0 {
			m.drainInBackground(s, lost, d.Active)
		}
	}
}

// drainInBackground drains pools that lost traffic to a change made
// elsewhere (nobody here waits for it). m.mu must be held.
func (m *Manager) drainInBackground(s *service, lost []*upstream.Pool, to string) {
	swapped := time.Now()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		d := m.drain(context.Background(), s, lost, swapped, func(admin.Event) {}, to)
		m.metrics.Drained(s.name, d.took, d.drained)
	}()
}

// syncTargetsLocked makes the service's pools hold the run-time targets d
// names: the pool this instance checked for the deploy takes its place,
// others get their targets set (the active and preview pools' new targets
// start Up, as at a start: every live instance checked them before the
// switch was written). m.mu must be held.
func (m *Manager) syncTargetsLocked(s *service, d state.Service) error {
	bal, _ := upstream.ParseBalance(s.cfg.Load().Balance)
	for _, name := range d.Pools() {
		specs := fromState(d.Targets[name])
		if pr := m.prepared[s.name]; pr != nil && pr.cand != nil && !pr.cand.installed &&
			pr.cand.up.Name() == name && sameSpecs(pr.cand.runtime, specs) {
			m.installCandidateLocked(s, pr.cand)
			continue
		}
		initial := upstream.Unknown
		if name == d.Active || name == d.Preview {
			initial = upstream.Up
		}
		p := s.pools[name]
		if p == nil {
			p = m.newPool(s, name, bal)
			p.runtime = specs
			m.setPoolTargets(p, specs, initial)
			continue
		}
		if sameSpecs(p.runtime, specs) {
			continue
		}
		p.runtime = specs
		m.retireTargets(m.setPoolTargets(p, specs, initial), s.cfg.Load())
	}
	if _, ok := s.pools[d.Active]; !ok {
		return fmt.Errorf("its active pool %q is neither in this instance's configuration nor given targets in the store — add the pool to services.%s.pools here", d.Active, s.name)
	}
	if _, ok := s.pools[d.Preview]; d.Preview != "" && !ok {
		return fmt.Errorf("its preview pool %q is not in this instance's configuration — add it to services.%s.pools here", d.Preview, s.name)
	}
	return nil
}

func sameSpecs(a, b []upstream.TargetSpec) bool {
	if a == nil || len(a) != len(b) {
		return false
	}
	return slices.Equal(a, b)
}

// publishAppliedLocked tells the shared store what this instance serves
// now. m.mu must be held.
func (m *Manager) publishAppliedLocked() {
	if m.shared == nil || m.router == nil {
		return
	}
	out := make(map[string]state.Service, len(m.services))
	for _, s := range m.services {
		out[s.name] = s.desired.Clone()
	}
	m.shared.Applied(out)
}

// Announced starts (on) or stops checking the pool of a deploy or
// rollback another instance announced (state.Follower).
func (m *Manager) Announced(i state.Intent, on bool) {
	if i.Instance == m.shared.Instance() {
		if !on {
			m.lockGone(i)
		}
		return // the deployer checks the pool in its own deploy
	}
	if i.Kind == admin.OpAbort {
		return // an abort goes back to the pool every instance serves
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.prepared[i.Service]; old != nil {
		if on && old.intent.ID == i.ID {
			return
		}
		old.cancel()
		if old.cand != nil && !old.cand.installed {
			m.stopCheckers(old.cand)
			for _, t := range old.cand.up.Targets() {
				t.Retire()
			}
		}
		delete(m.prepared, i.Service)
	}
	if !on || m.runCtx == nil || m.closed {
		return
	}
	ctx, cancel := context.WithCancel(m.runCtx)
	pr := &preparing{intent: i, cancel: cancel}
	var s *service
	for _, c := range m.services {
		if c.name == i.Service {
			s = c
		}
	}
	if s != nil && len(i.Targets) > 0 {
		bal, _ := upstream.ParseBalance(s.cfg.Load().Balance)
		cand := m.makePool(s, i.Pool, bal)
		if p, ok := s.pools[i.Pool]; ok {
			cand.inConfig, cand.docker, cand.cfgTargets = p.inConfig, p.docker, p.cfgTargets
		}
		cand.runtime = fromState(i.Targets)
		m.setPoolTargets(cand, cand.runtime, upstream.Unknown)
		pr.cand = cand
	}
	m.prepared[i.Service] = pr
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.prepare(ctx, s, pr)
	}()
}

// lockGone tells when the lock of a trial still running here went away
// (its lease expired while etcd could not be reached): another instance
// may take the lock and deploy now.
func (m *Manager) lockGone(i state.Intent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.services {
		if t := s.trial; s.name == i.Service && t != nil && t.lockID == i.ID {
			m.log.Error("the deploy lock of the canary or guard running here expired (etcd was out of reach longer than its lease): another instance may deploy meanwhile — end this trial with cutover promote or cutover abort",
				"service", s.name, "pool", t.pool, "trial", i.Trial, "store", m.store.Where())
		}
	}
}

// readyRepublish is how often readiness that could not be published is
// tried again.
const readyRepublish = 250 * time.Millisecond

// prepare checks the announced pool here and publishes what this instance
// sees until the announcement ends.
func (m *Manager) prepare(ctx context.Context, s *service, pr *preparing) {
	i := pr.intent
	r := state.Readiness{ID: i.ID, Service: i.Service, Pool: i.Pool, Instance: m.shared.Instance()}
	var p *pool
	switch {
	case s == nil:
		r.Problem = fmt.Sprintf("has no service %q in its configuration", i.Service)
	case pr.cand != nil:
		p = pr.cand
	default:
		m.mu.Lock()
		p = s.pools[i.Pool]
		m.mu.Unlock()
		if p == nil {
			r.Problem = fmt.Sprintf("has no pool %q of service %q — add it to its configuration, or deploy with --target", i.Pool, i.Service)
		}
	}
	if p == nil {
		m.publishReady(ctx, r)
		return
	}
	needed := s.settings().Thresholds.Healthy
	if steady, _ := poolReady(p, needed); !(steady && i.Kind == admin.OpRollback) && pr.cand == nil {
		// As the deployer does: fresh counts, a probe now.
		m.restartCheckers(ctx, p)
	}
	tick := time.NewTicker(readyRepublish)
	defer tick.Stop()
	published := ""
	for {
		wake := p.changed.Wait()
		ok, targets := poolReady(p, needed)
		r.Ready, r.Targets = ok, r.Targets[:0]
		for _, tp := range targets {
			r.Targets = append(r.Targets, state.TargetReadiness{Addr: tp.Addr, Ready: tp.Ready, Passes: tp.Passes, Needed: tp.Needed, Error: tp.Error})
		}
		if key := fmt.Sprint(r); key != published && m.publishReady(ctx, r) {
			published = key
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
		}
	}
}

func (m *Manager) publishReady(ctx context.Context, r state.Readiness) bool {
	if err := m.shared.PublishReady(ctx, r); err != nil {
		if ctx.Err() == nil {
			m.log.Warn("publishing readiness to the shared store failed; retrying", "service", r.Service, "pool", r.Pool, "err", err)
		}
		return false
	}
	return true
}

// lockShared takes the shared store's deploy lock for an operation (a
// no-op without a shared store): the lock also announces the operation,
// so the other instances start checking the pool. i gives the kind, pool
// and trial; the rest is filled in here.
func (m *Manager) lockShared(ctx context.Context, s *service, i state.Intent, specs []upstream.TargetSpec, progress func(admin.Event)) (state.Intent, func(), error) {
	if m.shared == nil {
		return state.Intent{}, func() {}, nil
	}
	i.ID, i.Service, i.Instance, i.Started = newID(), s.name, m.shared.Instance(), time.Now()
	for _, t := range specs {
		i.Targets = append(i.Targets, state.Target{Addr: t.Addr, Label: t.Label})
	}
	release, err := m.shared.Lock(ctx, i)
	if err != nil {
		m.mu.Lock()
		live := s.desired.Active
		m.mu.Unlock()
		var le *state.LockedError
		if errors.As(err, &le) {
			return i, nil, errorf(admin.KindBusy, "%s of service %q to pool %q refused: %v", i.Kind, s.name, i.Pool, err)
		}
		return i, nil, stateRefusal(i.Kind, s.name, i.Pool, live, err)
	}
	msg := fmt.Sprintf("took the deploy lock of service %q in %s; every live instance checks %q", s.name, m.store.Where(), i.Pool)
	if i.Kind == admin.OpAbort {
		msg = fmt.Sprintf("took the deploy lock of service %q in %s", s.name, m.store.Where())
	}
	progress(m.event(s.name, i.Pool, admin.PhaseHealth, msg))
	return i, release, nil
}

// TrialEndAsked ends this instance's trial when another instance asked
// for it (state.Follower).
func (m *Manager) TrialEndAsked(e state.TrialEnd) {
	m.mu.Lock()
	var t *trial
	for _, s := range m.services {
		if s.name == e.Service {
			t = s.trial
		}
	}
	m.mu.Unlock()
	if t == nil || t.lockID != e.ID {
		return
	}
	ch := t.abort
	if e.Action == admin.OpPromote {
		ch = t.promote
	}
	if t.end(ch) {
		m.log.Info("ending the trial as another instance asked", "service", e.Service, "pool", t.pool, "action", e.Action, "by", e.By)
	}
}

// endRemoteTrial asks the instance whose trial holds the service's lock
// to promote or abort it, and waits until this instance applied what it
// did. done is false when there is nothing to ask (no trial holds the
// lock, or its holder went away without acting): the caller then ends a
// held canary itself.
func (m *Manager) endRemoteTrial(ctx context.Context, s *service, verb string, timeout time.Duration) (res *admin.DeployResult, done bool, err error) {
	m.mu.Lock()
	before := s.desired
	m.mu.Unlock()
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	holder, rev, err := m.shared.EndTrial(actx, s.name, verb)
	var le *state.LockedError
	switch {
	case errors.Is(err, state.ErrNoTrial):
		return nil, false, nil
	case errors.As(err, &le):
		return nil, true, errorf(admin.KindBusy, "%s of service %q refused: %v", verb, s.name, err)
	case err != nil && actx.Err() != nil:
		return nil, true, errorf(admin.KindCanceled, "%s of service %q: %v — cutover status shows where it is; retry to ask again", verb, s.name, err)
	case err != nil:
		return nil, true, stateRefusal(verb, s.name, trialPool(before), before.Active, err)
	}
	if err := m.awaitApplied(actx, s, rev); err != nil {
		return nil, true, errorf(admin.KindCanceled, "%s of service %q: instance %s acted (revision %d) but this instance has not applied it yet — cutover status shows where it is", verb, s.name, holder.Instance, rev)
	}
	m.mu.Lock()
	d := s.desired
	m.mu.Unlock()
	if rules.TrialDidNothing(verb, before, d) {
		m.log.Warn("the trial holding the deploy lock ended without acting (its instance went away); ending what it left here", "service", s.name, "holder", holder.Instance, "action", verb)
		return nil, false, nil
	}
	return &admin.DeployResult{Service: s.name, Operation: verb, Pool: d.Active, From: holder.Pool,
		Message: fmt.Sprintf("%s of %q done by instance %s, which runs its %s: %s (its drain, and a guard's watch after a promotion, go on there)", verb, holder.Pool, holder.Instance, holder.Trial, rules.TrialEnded(s.name, d))}, true, nil
}

// awaitApplied waits until this instance applied revision rev (or a later
// one) of the service.
func (m *Manager) awaitApplied(ctx context.Context, s *service, rev int64) error {
	for {
		wake := m.applied.Wait()
		m.mu.Lock()
		have := s.desired.Revision
		m.mu.Unlock()
		if have >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}

// awaitInstances waits, until deadline, for every other live instance to
// see the pool ready (a no-op without a shared store).
func (m *Manager) awaitInstances(ctx context.Context, s *service, i state.Intent, deadline time.Time, progress func(admin.Event)) error {
	if m.shared == nil {
		return nil
	}
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	err := m.shared.AwaitReady(actx, i, func(ws []state.Waiting) {
		if len(ws) == 0 {
			progress(m.event(s.name, i.Pool, admin.PhaseHealth, fmt.Sprintf("every live instance sees pool %q ready", i.Pool)))
			return
		}
		for _, w := range ws {
			ev := m.event(s.name, i.Pool, admin.PhaseHealth, w.String())
			if len(w.Targets) > 0 {
				tp := rules.WaitingProgress(w)[0]
				ev.Target = &tp
			}
			progress(ev)
		}
	})
	if err == nil {
		return nil
	}
	m.mu.Lock()
	live := orNone(s.desired.Active)
	m.mu.Unlock()
	var nr *state.NotReadyError
	switch {
	case ctx.Err() != nil:
		return m.canceled(i.Kind, s.name, i.Pool)
	case errors.As(err, &nr):
		var failing []admin.TargetProgress
		for _, w := range nr.Waiting {
			failing = append(failing, rules.WaitingProgress(w)...)
		}
		return &admin.Error{
			Kind:    admin.KindUnhealthy,
			Message: fmt.Sprintf("%s of service %q to pool %q refused: %v — live traffic stays on %q", i.Kind, s.name, i.Pool, err, live),
			Failing: failing,
		}
	}
	return stateRefusal(i.Kind, s.name, i.Pool, live, err)
}

func newID() string { return state.NewIntentID() }

// StoreStatus is the shared store as this instance sees it, for status
// (nil without a shared store).
func (m *Manager) StoreStatus() *admin.StoreStatus {
	if m.shared == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return rules.StoreStatus(m.shared.Status(ctx), true)
}
