package controlplane

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/controlplane/guard"
	"github.com/cutover/cutover/internal/controlplane/history"
	"github.com/cutover/cutover/internal/controlplane/rules"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/stats"
	"github.com/cutover/cutover/internal/human"
)

// A trial is a deploy that does not move every client at once: a canary
// (a rising share of the service's clients, then the full switch) and/or a
// guard (the new pool watched against the old one's own numbers, rolled
// back at once on a breach). It runs in cutover serve, not in the caller:
// a CLI that detaches, or goes away, leaves it running, and promote and
// abort reach it through the service.

// trial is the running trial of a service; Manager.mu guards the pointer.
type trial struct {
	pool string
	// lockID is the deploy lock's intent the trial holds in a shared
	// store ("" without one): a promote or abort through another
	// instance names it.
	lockID string
	// promote and abort are closed (once) by Promote and Abort; acted is
	// closed once the trial has changed the routing for good (the full
	// switch, or every client back on the old pool).
	promote, abort chan struct{}
	endOnce        sync.Once
	acted          chan struct{}
	actOnce        sync.Once

	mu     sync.Mutex
	report *admin.GuardReport // nil without a guard
	weight uint32
}

func (t *trial) end(ch chan struct{}) bool {
	closed := false
	t.endOnce.Do(func() { close(ch); closed = true })
	return closed
}

func (t *trial) act() { t.actOnce.Do(func() { close(t.acted) }) }

func (t *trial) guardReport() *admin.GuardReport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.report == nil {
		return nil
	}
	r := *t.report
	return &r
}

// trialPlan is a validated canary and guard request.
type trialPlan struct {
	weights []uint32 // rising, each below route.WeightScale
	step    time.Duration
	guard   *guard.Settings
	detach  bool
}

// String describes the trial for the deploy lock, e.g. "canary 10%, 50%
// (steps of 1m0s) then guard 5m0s".
func (pl *trialPlan) String() string {
	var parts []string
	if len(pl.weights) > 0 {
		ps := make([]string, len(pl.weights))
		for i, w := range pl.weights {
			ps[i] = pctOf(w)
		}
		c := "canary " + strings.Join(ps, ", ")
		if pl.step > 0 {
			c += fmt.Sprintf(" (steps of %s)", pl.step)
		} else {
			c += " (held until promote or abort)"
		}
		parts = append(parts, c)
	}
	if pl.guard != nil {
		parts = append(parts, "guard "+pl.guard.Window.String())
	}
	return strings.Join(parts, " then ")
}

// heldLock is the shared deploy lock a trial holds until it is over.
type heldLock struct {
	id      string
	release func()
}

// planTrial validates the canary and guard parts of a deploy request.
func planTrial(req admin.DeployRequest) (*trialPlan, error) {
	if len(req.Canary) == 0 && req.Guard == nil {
		return nil, nil
	}
	pl := &trialPlan{step: time.Duration(req.Step), detach: req.Detach}
	last := 0.0
	for _, pct := range req.Canary {
		if !(pct > last && pct < 100) || math.IsNaN(pct) {
			return nil, errorf(admin.KindInvalid, "canary %v: give rising percentages between 0 and 100, e.g. --canary 10,50 (the full switch follows the last)", req.Canary)
		}
		last = pct
		pl.weights = append(pl.weights, uint32(math.Round(pct*route.WeightScale/100)))
	}
	if pl.step < 0 {
		return nil, errorf(admin.KindInvalid, "step %s: give how long each canary percentage holds, e.g. --step 1m (or leave it out to hold until cutover promote)", pl.step)
	}
	if pl.step > 0 && len(pl.weights) == 0 {
		return nil, errorf(admin.KindInvalid, "--step %s needs --canary: give the percentages to step through, e.g. --canary 10,50 --step %s", pl.step, pl.step)
	}
	if g := req.Guard; g != nil {
		gs := guard.Settings{Window: time.Duration(g.Window), MaxErrorRate: g.MaxErrorRate, MaxLatencyRatio: g.MaxLatencyRatio, MinRequests: g.MinRequests}
		if err := gs.Validate(); err != nil {
			return nil, errorf(admin.KindInvalid, "guard: %v", err)
		}
		pl.guard = &gs
	}
	return pl, nil
}

// trialRun is one running trial with what its steps need.
type trialRun struct {
	m         *Manager
	s         *service
	p         *pool
	name, old string
	plan      *trialPlan
	candidate bool
	expect    string
	took      time.Duration
	t         *trial
	judge     *guard.Judge
	// started is when the pool began taking traffic (zero before).
	started time.Time
	// progress passes events to the caller while it listens.
	progress *relay
	// stopping is closed when cutover serve shuts down: the trial stops
	// where it is, routing untouched, and lets go of its lock.
	stopping <-chan struct{}
	// answered says the caller was given its answer before the end (only
	// the trial's goroutine touches it).
	answered bool
}

// relay forwards progress events to a caller until it stops listening.
type relay struct {
	mu  sync.Mutex
	out func(admin.Event)
}

func (r *relay) send(ev admin.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.out != nil {
		r.out(ev)
	}
}

func (r *relay) stop() {
	r.mu.Lock()
	r.out = nil
	r.mu.Unlock()
}

// trialOutcome is what a trial ended with, or a point at which the caller
// stops waiting (traffic started for a detached deploy, a canary that
// holds until promote).
type trialOutcome struct {
	res *admin.DeployResult
	err error
}

// runTrial runs a deploy's canary and guard after the pool passed its
// health gate. The deploy's operation stays registered until the trial is
// over; runTrial returns when it is over, or earlier when the caller is
// done waiting: a detached deploy once the pool takes traffic, a canary
// without --step once it holds.
//
// The trial holds the deploy's shared lock (lock) until it is over, its
// lease kept alive all along: a deploy through another instance meanwhile
// is refused naming the trial, promote and abort through any instance
// reach it (TrialEndAsked), and when this process dies the lock expires
// with its lease.
func (m *Manager) runTrial(ctx context.Context, s *service, p *pool, pl *trialPlan, lock heldLock, candidate bool, expect string, took time.Duration, progress func(admin.Event)) (*admin.DeployResult, error) {
	m.mu.Lock()
	old := s.desired.Active
	t := &trial{pool: p.up.Name(), lockID: lock.id, promote: make(chan struct{}), abort: make(chan struct{}), acted: make(chan struct{})}
	s.trial = t
	m.mu.Unlock()
	r := &trialRun{m: m, s: s, p: p, name: p.up.Name(), old: old, plan: pl, candidate: candidate, expect: expect, took: took, t: t,
		progress: &relay{out: progress}, stopping: m.closing}
	// answer carries what the caller returns: the trial's end, or a point
	// at which it may stop waiting (then the trial records its own end).
	answer := make(chan trialOutcome, 1)
	go func() {
		// Close waits for the trial (m.wg, added by beginTrial), so that
		// its lock is released and its end recorded before the store
		// closes.
		defer m.wg.Done()
		defer lock.release()
		defer m.endOp(s.name)
		defer t.act()
		defer func() {
			m.mu.Lock()
			if s.trial == t {
				s.trial = nil
			}
			m.mu.Unlock()
		}()
		res, err := r.run(answer)
		if !r.answered {
			answer <- trialOutcome{res, err}
			return
		}
		r.record(trialOutcome{res, err})
	}()
	out := <-answer
	r.progress.stop()
	return out.res, out.err
}

// beginTrial counts a trial about to start in m.wg, or refuses it when
// the control plane is closing (a trial started then would take traffic
// in a process about to exit).
func (m *Manager) beginTrial(s *service, pool string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errorf(admin.KindRefused, "deploy of service %q to pool %q refused: cutover serve is shutting down — live traffic stays on %q; retry on the instance that serves next",
			s.name, pool, s.desired.Active)
	}
	m.wg.Add(1)
	return nil
}

// record writes the end of a trial the caller stopped waiting for.
func (r *trialRun) record(out trialOutcome) {
	e := history.Entry{Kind: history.KindTrial, Service: r.s.name, From: r.old, To: r.name, Started: r.started}
	if e.Started.IsZero() {
		e.Started = time.Now()
	}
	id := r.m.beginEntry(e)
	r.m.outcome(&e, out.res, out.err)
	r.m.endEntry(id, e)
}

// run does the steps. It sends on answer (once, setting r.answered) when
// the caller may stop waiting.
func (r *trialRun) run(answer chan<- trialOutcome) (*admin.DeployResult, error) {
	m, s := r.m, r.s
	ctx := context.Background() // the trial outlives the request that started it
	if g := r.plan.guard; g != nil {
		now := time.Now()
		base := m.poolStats(s.name, r.old).Summary(now.Add(-guard.BaselineSpan), now)
		r.judge = guard.New(*g, base)
	}
	tellEarly := func(res *admin.DeployResult) {
		if !r.answered {
			r.answered = true
			answer <- trialOutcome{res: res}
		}
	}
	for i, w := range r.plan.weights {
		first := i == 0
		_, ap, err := m.change(ctx, s, func(cur state.Service) (state.Service, error) {
			if err := expected(admin.OpDeploy, s.name, r.name, r.expect, cur.Active); err != nil {
				return cur, err
			}
			if cur.Active != r.old {
				return cur, errorf(admin.KindRefused, "canary of service %q stopped: the stable pool is %q now, not %q", s.name, cur.Active, r.old)
			}
			cur.Canary, cur.Weight = r.name, w
			if r.candidate && first {
				cur.SetTargets(r.name, r.p.runtime)
			}
			return cur, nil
		}, func() {
			if r.candidate && first {
				m.installCandidateLocked(s, r.p)
			}
		})
		if err != nil {
			if first {
				return nil, changeRefusal(admin.OpDeploy, s.name, r.name, r.old, err)
			}
			return r.dropCanary(fmt.Sprintf("canary step to %s could not be written: %v", pctOf(w), err), "")
		}
		// Weights only rise, so no pool loses all of its traffic here;
		// were one to, its requests drain like after any switch.
		m.drain(ctx, s, ap.lost, ap.at, r.progress.send, r.name)
		if first {
			r.started = ap.at
			r.startReport()
		}
		r.t.mu.Lock()
		r.t.weight = w
		r.t.mu.Unlock()
		r.progress.send(m.event(s.name, r.name, admin.PhaseCanary, fmt.Sprintf("canary: %q takes %s of the clients of service %q", r.name, pctOf(w), s.name)))
		if r.plan.detach {
			tellEarly(&admin.DeployResult{Service: s.name, Operation: admin.OpDeploy, Pool: r.name, From: r.old, Canary: pct(w),
				TimeToHealthy: admin.Duration(r.took), Guard: r.t.guardReport(),
				Message: fmt.Sprintf("canary of service %q started: %q takes %s of its clients; the steps and guard go on in cutover serve (cutover status shows them)", s.name, r.name, pctOf(w))})
		}
		var step <-chan time.Time
		if r.plan.step > 0 {
			tm := time.NewTimer(r.plan.step)
			defer tm.Stop()
			step = tm.C
		} else {
			tellEarly(&admin.DeployResult{Service: s.name, Operation: admin.OpDeploy, Pool: r.name, From: r.old, Canary: pct(w),
				TimeToHealthy: admin.Duration(r.took), Guard: r.t.guardReport(),
				Message: fmt.Sprintf("canary of service %q holds: %q takes %s of its clients until cutover promote (the full switch) or cutover abort", s.name, r.name, pctOf(w))})
		}
		switch why, breach := r.wait(step, true); why {
		case waitShutdown:
			return nil, r.interrupted(w)
		case waitAbort:
			return r.dropCanary(fmt.Sprintf("canary of %q aborted by cutover abort", r.name), "")
		case waitBreach:
			return r.dropCanary("guard: "+breach, breach)
		case waitPromote:
			return r.fullSwitch(tellEarly)
		}
	}
	return r.fullSwitch(tellEarly)
}

// Reasons a wait ends.
const (
	waitStep = iota
	waitPromote
	waitAbort
	waitBreach
	waitWindowOver
	waitShutdown
)

// wait waits for step (nil: none), a promote or abort, or a breach of the
// guard, judging it every guardTick while its window runs. Without a step
// it ends when the window does, unless hold (a canary holding until
// promote or abort).
func (r *trialRun) wait(step <-chan time.Time, hold bool) (why int, breach string) {
	tick := time.NewTicker(guardTick)
	defer tick.Stop()
	for {
		var ticks <-chan time.Time
		if r.guardRunning() {
			ticks = tick.C
		} else if step == nil && !hold {
			return waitWindowOver, ""
		}
		select {
		case <-step:
			return waitStep, ""
		case <-r.t.promote:
			return waitPromote, ""
		case <-r.t.abort:
			return waitAbort, ""
		case <-r.stopping:
			return waitShutdown, ""
		case <-ticks:
			if b := r.judgeNow(); b != "" {
				return waitBreach, b
			}
		}
	}
}

// guardTick is how often a guard judges.
const guardTick = 500 * time.Millisecond

func (r *trialRun) guardRunning() bool {
	return r.judge != nil && !r.started.IsZero() && time.Since(r.started) < r.plan.guard.Window
}

// startReport opens the guard's report once the pool takes traffic.
func (r *trialRun) startReport() {
	if r.judge == nil {
		return
	}
	b := r.judge.Baseline()
	rep := &admin.GuardReport{Pool: r.name, Baseline: r.old, Started: r.started, Ends: r.started.Add(r.plan.guard.Window),
		BaselineRequests: b.Requests, BaselineErrorRate: b.ErrorRate(), BaselineP99MS: msOf(b.P99),
		MaxErrorRate: r.judge.MaxErrorRate(), MaxP99MS: msOf(r.judge.MaxP99())}
	r.t.mu.Lock()
	r.t.report = rep
	r.t.mu.Unlock()
}

// judgeNow judges the pool's numbers since it took traffic and returns the
// breach ("" none).
func (r *trialRun) judgeNow() string {
	cur := r.m.poolStats(r.s.name, r.name).Summary(r.started, time.Now())
	v := r.judge.Judge(cur)
	r.t.mu.Lock()
	if rep := r.t.report; rep != nil {
		rep.Requests, rep.ErrorRate, rep.P99MS = cur.Requests, cur.ErrorRate(), msOf(cur.P99)
		if v.Breach != "" {
			rep.Breach, rep.Done, rep.BreachedAt = v.Breach, true, time.Now()
		}
	}
	r.t.mu.Unlock()
	if v.Breach != "" {
		r.m.log.Warn("guard breach", "service", r.s.name, "pool", r.name, "baseline", r.old, "breach", v.Breach,
			"requests", cur.Requests, "error_rate", cur.ErrorRate(), "p99", cur.P99)
	}
	return v.Breach
}

// fullSwitch makes the pool stable (the old one drains), then keeps the
// guard watching for what is left of its window.
func (r *trialRun) fullSwitch(tellEarly func(*admin.DeployResult)) (*admin.DeployResult, error) {
	m, s := r.m, r.s
	res, err := m.switchTo(context.Background(), s, r.p, switchOptions{kind: admin.OpDeploy, candidate: r.candidate && len(r.plan.weights) == 0,
		expect: r.expect, took: r.took}, r.progress.send)
	if err != nil {
		if len(r.plan.weights) > 0 {
			return r.dropCanary(fmt.Sprintf("full switch to %q refused: %v", r.name, err), "")
		}
		return nil, err
	}
	r.t.act()
	if r.started.IsZero() {
		r.started = res.SwitchedAt
		r.startReport()
	}
	if r.judge == nil {
		return res, nil
	}
	if r.plan.detach {
		res.Message += "; the guard watches it in cutover serve until " + r.started.Add(r.plan.guard.Window).Format("15:04:05")
		res.Guard = r.t.guardReport()
		tellEarly(res)
	}
	r.progress.send(m.event(s.name, r.name, admin.PhaseGuard, fmt.Sprintf("guard: watching %q against %q until %s", r.name, r.old, r.started.Add(r.plan.guard.Window).Format("15:04:05"))))
	for r.guardRunning() {
		switch why, breach := r.wait(nil, false); why {
		case waitBreach:
			return r.rollBack(breach)
		case waitAbort:
			return r.rollBack("rolled back by cutover abort during the guard window")
		case waitShutdown:
			r.judgeNow()
			res.Guard = r.t.guardReport()
			left := time.Until(r.started.Add(r.plan.guard.Window)).Round(time.Second)
			res.Message += fmt.Sprintf("; the guard stopped unfinished, %s before its window's end, because cutover serve shut down (%s on %q judged until then, error rate %.2f%%, no breach)",
				human.Duration(left), human.Count(int(res.Guard.Requests), "request"), r.name, 100*res.Guard.ErrorRate)
			return res, nil
		case waitPromote, waitWindowOver:
			r.t.mu.Lock()
			if r.t.report != nil {
				r.t.report.Done = true
			}
			r.t.mu.Unlock()
			res.Guard = r.t.guardReport()
			res.Message += fmt.Sprintf("; guard passed (%s on %q, error rate %.2f%%)", human.Count(int(res.Guard.Requests), "request"), r.name, 100*res.Guard.ErrorRate)
			return res, nil
		}
	}
	r.judgeNow()
	r.t.mu.Lock()
	if r.t.report != nil {
		r.t.report.Done = true
	}
	r.t.mu.Unlock()
	res.Guard = r.t.guardReport()
	return res, nil
}

// dropCanary sends every client back to the stable pool at once; the
// canary's requests running now finish there. breach, when set, is a guard
// breach: the result is then a KindGuard error with the numbers.
func (r *trialRun) dropCanary(why, breach string) (*admin.DeployResult, error) {
	m, s := r.m, r.s
	_, ap, err := m.change(context.Background(), s, func(cur state.Service) (state.Service, error) {
		if cur.Canary == r.name {
			cur.Canary, cur.Weight = "", 0
		}
		return cur, nil
	}, nil)
	if err != nil {
		// The state cannot be written: the canary keeps its share rather
		// than serve a routing a restart would not.
		return nil, errorf(admin.KindState, "%s, but the canary could not be dropped: %v — it keeps its share; run cutover abort once the state can be written", why, err)
	}
	swapped := ap.at
	r.t.act()
	r.noteRolledBack(swapped)
	r.progress.send(m.event(s.name, r.name, admin.PhaseCanary, fmt.Sprintf("%s: every client of service %q is back on %q", why, s.name, r.old)))
	d := m.drain(context.Background(), s, ap.lost, swapped, r.progress.send, r.old)
	return r.ended(why, breach, d)
}

// rollBack switches back to the old pool after the full switch (it is still
// warm), draining the new one.
func (r *trialRun) rollBack(why string) (*admin.DeployResult, error) {
	m, s := r.m, r.s
	_, ap, err := m.change(context.Background(), s, func(cur state.Service) (state.Service, error) {
		if cur.Active == r.name {
			cur.Active, cur.Previous = r.old, r.name
		}
		return cur, nil
	}, nil)
	if err != nil {
		return nil, errorf(admin.KindState, "guard: %s, but the rollback to %q could not be written: %v — run cutover rollback once the state can be written", why, r.old, err)
	}
	swapped := ap.at
	r.t.act()
	r.noteRolledBack(swapped)
	m.metrics.Switched(s.name, admin.OpRollback, time.Since(r.started))
	r.progress.send(m.event(s.name, r.old, admin.PhaseSwitch, fmt.Sprintf("guard: %s — switched service %q back to %q", why, s.name, r.old)))
	d := m.drain(context.Background(), s, ap.lost, swapped, r.progress.send, r.old)
	return r.ended(why, why, d)
}

// interrupted is the end of a canary stopped by a shutdown at weight w:
// the desired state keeps its share, so the next process (or another
// instance) serves the same split until promote or abort.
func (r *trialRun) interrupted(w uint32) error {
	r.m.log.Warn("canary interrupted by shutdown; it keeps its share until cutover promote or cutover abort",
		"service", r.s.name, "pool", r.name, "share", pctOf(w))
	return errorf(admin.KindCanceled, "canary of %q stopped because cutover serve shut down: %q keeps %s of the clients of service %q (the desired state holds it) until cutover promote or cutover abort; its remaining steps and guard do not resume",
		r.name, r.name, pctOf(w), r.s.name)
}

// noteRolledBack records in the guard's report when the routing went back.
func (r *trialRun) noteRolledBack(at time.Time) {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	if rep := r.t.report; rep != nil && rep.Breach != "" {
		rep.RolledBackAt = at
	}
}

// ended is the result of a trial that sent the service back to the old
// pool.
func (r *trialRun) ended(why, breach string, d drained) (*admin.DeployResult, error) {
	r.t.mu.Lock()
	if r.t.report != nil {
		r.t.report.Done = true
	}
	r.t.mu.Unlock()
	rep := r.t.guardReport()
	msg := fmt.Sprintf("%s — service %q is served by %q again (%s drained from %q in %s)", why, r.s.name, r.old,
		human.Count(int(d.drained), "request"), r.name, human.Duration(d.took))
	if breach != "" {
		r.m.log.Warn("guard rolled back", "service", r.s.name, "pool", r.name, "to", r.old, "breach", breach)
		return nil, &admin.Error{Kind: admin.KindGuard, Message: msg, Guard: rep}
	}
	return &admin.DeployResult{Service: r.s.name, Operation: admin.OpAbort, Pool: r.old, From: r.name, Message: msg, Guard: rep,
		InFlightAtSwitch: d.inFlight, Drained: d.drained, ClosedAtTimeout: d.closed, TimeToDrain: admin.Duration(d.took)}, nil
}

// poolStats is a pool's series (nil when there are no stats: a nil series
// summarises to zeros).
func (m *Manager) poolStats(service, pool string) *stats.Series {
	if m.stats == nil {
		return nil
	}
	return m.stats.Pool(service, pool)
}

func pct(w uint32) float64 { return rules.Percent(w) }

func pctOf(w uint32) string { return rules.PercentOf(w) }

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Promote ends a service's canary with the full switch now, or its preview
// by making the preview pool stable (see deploy's switch and drain).
func (m *Manager) Promote(ctx context.Context, req admin.TrialRequest, progress func(admin.Event)) (*admin.DeployResult, error) {
	return m.recorded(history.KindPromote, req.Service, func(s *service) string { return trialPool(s.desired) }, progress, func(p func(admin.Event)) (*admin.DeployResult, error) {
		return m.endTrial(ctx, req, true, p)
	})
}

// Abort ends a service's canary (every client back on the stable pool at
// once, the canary's requests finishing there), or drops its preview pool.
func (m *Manager) Abort(ctx context.Context, req admin.TrialRequest, progress func(admin.Event)) (*admin.DeployResult, error) {
	return m.recorded(history.KindAbort, req.Service, func(s *service) string { return s.desired.Active }, progress, func(p func(admin.Event)) (*admin.DeployResult, error) {
		return m.endTrial(ctx, req, false, p)
	})
}

func trialPool(d state.Service) string {
	if d.Canary != "" {
		return d.Canary
	}
	return d.Preview
}

func (m *Manager) endTrial(ctx context.Context, req admin.TrialRequest, promote bool, progress func(admin.Event)) (*admin.DeployResult, error) {
	verb := admin.OpAbort
	if promote {
		verb = admin.OpPromote
	}
	m.mu.Lock()
	s, err := m.serviceLocked(req.Service)
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	if t := s.trial; t != nil {
		// A running canary or guard: it acts, and the caller sees its
		// outcome in status and the history.
		m.mu.Unlock()
		ch := t.abort
		if promote {
			ch = t.promote
		}
		if !t.end(ch) {
			return nil, errorf(admin.KindRefused, "%s of service %q refused: the running canary or guard of %q is already ending", verb, s.name, t.pool)
		}
		// Wait until the trial has changed the routing, so the caller
		// knows it took effect (its drain and the rest of a guard go on).
		select {
		case <-t.acted:
		case <-ctx.Done():
			return nil, errorf(admin.KindCanceled, "%s of service %q: the running canary or guard of %q was told, but the caller went away before it acted — cutover status shows where it is", verb, s.name, t.pool)
		}
		m.mu.Lock()
		d := s.desired
		m.mu.Unlock()
		what := fmt.Sprintf("%q takes every client of service %q", d.Active, s.name)
		if d.Canary != "" {
			what = fmt.Sprintf("the canary %q still takes %s of service %q", d.Canary, pctOf(d.Weight), s.name)
		}
		return &admin.DeployResult{Service: s.name, Operation: verb, Pool: d.Active, From: t.pool,
			Message: fmt.Sprintf("%s of %q done: %s (its drain, and a guard's watch after a promotion, go on in cutover serve)", verb, t.pool, what)}, nil
	}
	held, err := rules.Held(s.desired, s.name, verb)
	m.mu.Unlock()
	if m.shared != nil {
		// The trial may run in another instance: it holds the lock.
		res, done, rerr := m.endRemoteTrial(ctx, s, verb, opTimeout(req.Timeout))
		if done {
			return res, rerr
		}
		m.mu.Lock()
		held, err = rules.Held(s.desired, s.name, verb)
		m.mu.Unlock()
	}
	if err != nil {
		return nil, err
	}
	if promote {
		return m.deploy(ctx, admin.DeployRequest{Service: s.name, Pool: held, Timeout: req.Timeout}, progress)
	}
	return m.dropHeld(ctx, s, held, progress)
}

// dropHeld takes a canary or preview pool that no trial runs (it held
// across a restart, or was deployed with --preview) out of the routing,
// draining it.
func (m *Manager) dropHeld(ctx context.Context, s *service, pool string, progress func(admin.Event)) (*admin.DeployResult, error) {
	m.mu.Lock()
	if op := m.ops[s.name]; op != nil {
		m.mu.Unlock()
		return nil, busy(admin.OpAbort, s.name, pool, op)
	}
	if err := m.checkWritable(); err != nil {
		m.mu.Unlock()
		return nil, stateRefusal(admin.OpAbort, s.name, pool, s.desired.Active, err)
	}
	m.ops[s.name] = &admin.Operation{Kind: admin.OpAbort, Service: s.name, Pool: pool, Started: time.Now()}
	m.mu.Unlock()
	defer m.endOp(s.name)
	_, release, err := m.lockShared(ctx, s, state.Intent{Kind: admin.OpAbort, Pool: pool}, nil, progress)
	if err != nil {
		return nil, err
	}
	defer release()
	prev, ap, err := m.change(ctx, s, func(cur state.Service) (state.Service, error) {
		return rules.Drop(cur, pool), nil
	}, nil)
	if err != nil {
		return nil, changeRefusal(admin.OpAbort, s.name, pool, prev.Active, err)
	}
	swapped := ap.at
	progress(m.event(s.name, prev.Active, admin.PhaseSwitch, fmt.Sprintf("%q takes no requests of service %q any more; every request goes to %q", pool, s.name, prev.Active)))
	d := m.drain(ctx, s, ap.lost, swapped, progress, prev.Active)
	return &admin.DeployResult{Service: s.name, Operation: admin.OpAbort, Pool: prev.Active, From: pool,
		InFlightAtSwitch: d.inFlight, Drained: d.drained, ClosedAtTimeout: d.closed, TimeToDrain: admin.Duration(d.took),
		Message: fmt.Sprintf("aborted %q: service %q is served by %q alone (%s drained in %s)", pool, s.name, prev.Active, human.Count(int(d.drained), "request"), human.Duration(d.took))}, nil
}
