package controlplane

import (
	"context"
	"errors"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/history"
)

// This file is where every operation of the control plane begins and ends:
// the exported Deploy, Rollback and RecordReload record each one in the
// history and keep the progress of a running one in its admin.Operation (for
// status and the dashboard); the work itself is in deploy.go and reload.go.

// Deploy switches a service to a pool (see deploy for the steps and
// promises) and records the operation in the history, whatever its
// outcome.
func (m *Manager) Deploy(ctx context.Context, req admin.DeployRequest, progress func(admin.Event)) (*admin.DeployResult, error) {
	kind := history.KindDeploy
	if req.Origin == admin.OriginRelease {
		kind = history.KindRelease
	}
	return m.recorded(kind, req.Service, func(*service) string { return req.Pool }, progress, func(p func(admin.Event)) (*admin.DeployResult, error) {
		if req.Origin != "" && req.Origin != admin.OriginRelease {
			return nil, errorf(admin.KindInvalid, "origin %q is not known — leave it out, or give %q for a deploy made by cutover release", req.Origin, admin.OriginRelease)
		}
		return m.deploy(ctx, req, p)
	})
}

// Rollback switches a service back to its previous pool (see rollback) and
// records the operation in the history, whatever its outcome.
func (m *Manager) Rollback(ctx context.Context, req admin.RollbackRequest, progress func(admin.Event)) (*admin.DeployResult, error) {
	return m.recorded(history.KindRollback, req.Service, func(s *service) string { return s.desired.Previous }, progress, func(p func(admin.Event)) (*admin.DeployResult, error) {
		return m.rollback(ctx, req, p)
	})
}

// RecordReload runs a reload — reading the configuration and applying it
// with Reload, which the caller does in run — and records it in the
// history. A reload refused for a bad file or a running deploy is recorded
// as refused (nothing changed).
func (m *Manager) RecordReload(run func() error) error {
	id := m.beginEntry(history.Entry{Kind: history.KindReload})
	err := run()
	m.metrics.Reloaded(err)
	e := history.Entry{Kind: history.KindReload, Result: history.ResultSucceeded, Reason: "configuration reloaded"}
	if err != nil {
		e.Result, e.Reason = history.ResultFailed, err.Error()
		var ce *admin.Error
		if errors.As(err, &ce) {
			e.ErrorKind = string(ce.Kind)
		}
		if refusedReload(err) {
			e.Result = history.ResultRefused
		}
	}
	m.endEntry(id, e)
	return err
}

// refusedReload tells a reload that changed nothing (a bad file, a running
// deploy, a missing active pool) from one that failed part-way.
func refusedReload(err error) bool {
	var ce *admin.Error
	if errors.As(err, &ce) {
		return true
	}
	var problems *config.Errors
	return errors.As(err, &problems)
}

// History returns the recorded operations of service ("" for every
// service), newest first.
func (m *Manager) History(service string) []history.Entry { return m.hist.List(service) }

// recorded runs one deploy or rollback: it records the start (the service,
// the pool active now and the pool to switches to), passes each progress
// event to the running admin.Operation and to progress, and records the outcome.
func (m *Manager) recorded(kind, service string, to func(*service) string, progress func(admin.Event), run func(func(admin.Event)) (*admin.DeployResult, error)) (*admin.DeployResult, error) {
	if progress == nil {
		progress = func(admin.Event) {}
	}
	e := history.Entry{Kind: kind, Service: service, Started: time.Now()}
	m.mu.Lock()
	if s, err := m.serviceLocked(service); err == nil {
		e.Service = s.name
		e.From = s.desired.Active
		e.To = to(s)
	}
	m.mu.Unlock()
	id := m.beginEntry(e)
	// The targets the health gate checked, as it last saw each: a deploy
	// with --target checks a candidate pool that is gone when it is
	// refused, so they are taken from its progress.
	var gated []history.Target
	res, err := run(func(ev admin.Event) {
		m.noteProgress(ev)
		if tp := ev.Target; tp != nil {
			gated = noteTarget(gated, tp)
		}
		progress(ev)
	})
	m.outcome(&e, res, err)
	if len(gated) > 0 {
		e.Targets = gated
	} else {
		e.Targets = m.targetsOf(e.Service, e.To)
	}
	var ce *admin.Error
	if errors.As(err, &ce) {
		for _, f := range ce.Failing {
			e.Targets = noteTarget(e.Targets, &f)
		}
	}
	m.endEntry(id, e)
	return res, err
}

// noteTarget sets tp's entry in ts (adding it when new).
func noteTarget(ts []history.Target, tp *admin.TargetProgress) []history.Target {
	ht := history.Target{Addr: tp.Addr, Label: tp.Label, Ready: tp.Ready}
	if !tp.Ready {
		ht.Error = tp.Describe()
	}
	for i := range ts {
		if ts[i].Addr == tp.Addr {
			ts[i] = ht
			return ts
		}
	}
	return append(ts, ht)
}

func (m *Manager) beginEntry(e history.Entry) uint64 {
	id, err := m.hist.Begin(e)
	if err != nil {
		m.log.Error("operation not written to the history", "kind", e.Kind, "service", e.Service, "error", err)
	}
	return id
}

func (m *Manager) endEntry(id uint64, e history.Entry) {
	if err := m.hist.End(id, e); err != nil {
		m.log.Error("outcome of an operation not written to the history", "kind", e.Kind, "service", e.Service, "error", err)
	}
}

// noteProgress keeps the last step of a running operation in its
// admin.Operation, so status shows where it is.
func (m *Manager) noteProgress(ev admin.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	op := m.ops[ev.Service]
	if op == nil || op.Pool != ev.Pool {
		return
	}
	op.Phase, op.Message = ev.Phase, ev.Message
	if ev.Total > 0 {
		op.Ready, op.Total = ev.Ready, ev.Total
	}
}

// outcome fills e from a finished deploy or rollback.
func (m *Manager) outcome(e *history.Entry, res *admin.DeployResult, err error) {
	if err != nil {
		e.Result, e.Reason = history.ResultFailed, err.Error()
		var ce *admin.Error
		if errors.As(err, &ce) {
			e.Reason, e.ErrorKind = ce.Message, string(ce.Kind)
			switch ce.Kind {
			case admin.KindUnhealthy:
				e.Result = history.ResultTimedOut
			case admin.KindBusy, admin.KindRefused, admin.KindNotFound, admin.KindInvalid:
				e.Result = history.ResultRefused
			}
		}
	} else {
		e.Result, e.Reason, e.NoOp = history.ResultSucceeded, res.Message, res.NoOp
		e.Service, e.To = res.Service, res.Pool
		if res.From != "" {
			e.From = res.From
		}
		e.TimeToHealthyMS = ms(time.Duration(res.TimeToHealthy))
		e.InFlightAtSwitch, e.Drained, e.ClosedAtTimeout = res.InFlightAtSwitch, res.Drained, res.ClosedAtTimeout
		e.DrainMS = ms(time.Duration(res.TimeToDrain))
		e.Warnings = res.Warnings
	}
}

// targetsOf lists the targets of a service's pool as the history keeps
// them.
func (m *Manager) targetsOf(name, pool string) []history.Target {
	m.mu.Lock()
	defer m.mu.Unlock()
	var s *service
	for _, c := range m.services {
		if c.name == name {
			s = c
		}
	}
	if s == nil || s.pools[pool] == nil {
		return nil
	}
	needed := s.settings().Thresholds.Healthy
	var out []history.Target
	for _, t := range s.pools[pool].up.Targets() {
		out = append(out, history.Target{Addr: t.Addr(), Label: labelIfDifferent(t.Status()), Ready: targetReady(t, needed)})
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
