package controlplane

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/controlplane/history"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/human"
)

// This file is the scheduled stop of a pool that left the routing (cutover
// release --keep-old): the time is part of the desired state
// (state.Service.StopAt), committed with the switch, so that cutover serve
// stops the old colour whatever becomes of the command that asked, also
// across restarts. A pool routed to again (a rollback) loses its entry in
// the same commit (change), so it is never stopped under its requests.

// PoolStopper stops the containers of a pool; the Docker provider is one.
// It returns the names of the containers it stopped.
type PoolStopper interface {
	StopPool(ctx context.Context, service, pool string) ([]string, error)
}

const (
	// stopTimeout bounds one stop of a pool's containers (each has its
	// own stop timeout inside, 10 s by default).
	stopTimeout = 2 * time.Minute
	// stopRetryDelay is the wait before a stop whose outcome could not be
	// written to the state is tried again.
	stopRetryDelay = 10 * time.Second
)

// checkStopOld refuses a StopOld that does not fit the deploy: with a
// canary, guard, preview or detach the old pool may still take traffic
// when the deploy returns.
func checkStopOld(req admin.DeployRequest, trial bool) error {
	if req.StopOld == nil {
		return nil
	}
	if *req.StopOld < 0 {
		return errorf(admin.KindInvalid, "stop_old %s is negative — give how long the old pool keeps running after the switch, e.g. 10m (0: right after the drain)", *req.StopOld)
	}
	if trial || req.Preview || req.Detach {
		return errorf(admin.KindInvalid, "stop_old (release --keep-old) applies to a plain switch: with a canary, guard, preview or detach the old pool may still take traffic — leave it out and stop the old pool once the new one is live")
	}
	return nil
}

// canStopLocked refuses a StopOld this cutover could not carry out: the
// active pool (the one to stop after the switch) must follow Docker
// containers, and there must be a way to stop them. m.mu must be held.
func (m *Manager) canStopLocked(s *service, req admin.DeployRequest) error {
	if req.StopOld == nil {
		return nil
	}
	active := s.pools[s.desired.Active]
	switch {
	case active == nil:
		return nil // nothing to stop
	case !active.docker:
		return errorf(admin.KindRefused, "deploy of service %q to pool %q refused: stop_old (release --keep-old) would stop pool %q, but its targets come from %s, not from Docker containers, so cutover cannot stop it — leave --keep-old out and stop it yourself",
			s.name, req.Pool, s.desired.Active, active.source())
	case m.stopper == nil:
		return errorf(admin.KindRefused, "deploy of service %q to pool %q refused: this cutover has no Docker connection to stop pool %q with — leave --keep-old out and stop it yourself", s.name, req.Pool, s.desired.Active)
	}
	return nil
}

// stopAt is when pool of s is to be stopped (ok false: it is not).
func (m *Manager) stopAt(s *service, pool string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := s.desired.StopAt[pool]
	return at, ok
}

// stopNote is what a switch result says about a scheduled stop of from.
func stopNote(from string, at time.Time) string {
	return fmt.Sprintf("cutover stops the containers of %q at %s (in %s) unless it is live again by then (cutover rollback)",
		from, at.Local().Format("15:04:05"), human.Duration(time.Until(at).Round(time.Second)))
}

// armStopsLocked sets the service's stop timer to the first scheduled
// stop (none when there is none, or before Start, or once closed). m.mu
// must be held.
func (m *Manager) armStopsLocked(s *service) {
	if s.stopTimer != nil {
		s.stopTimer.Stop()
		s.stopTimer = nil
	}
	if m.runCtx == nil || m.closed || len(s.desired.StopAt) == 0 {
		return
	}
	var first time.Time
	for _, at := range s.desired.StopAt {
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	if first.Before(s.stopRetry) {
		first = s.stopRetry
	}
	s.stopTimer = time.AfterFunc(time.Until(first), func() { m.stopDue(s) })
}

// stopDue stops the first pool of s whose stop time has come. It waits for
// an operation of the service to end (endOp arms the timer again), and
// holds one itself while it stops, so no deploy or rollback to the pool
// can start until the stop is over and its entry is gone.
func (m *Manager) stopDue(s *service) {
	m.mu.Lock()
	if m.closed || m.runCtx == nil || !slices.Contains(m.services, s) || m.ops[s.name] != nil {
		m.mu.Unlock()
		return
	}
	now := time.Now()
	pool := ""
	for _, name := range slices.Sorted(maps.Keys(s.desired.StopAt)) {
		if !s.desired.StopAt[name].After(now) && !s.desired.Uses(name) {
			pool = name
			break
		}
	}
	if pool == "" || now.Before(s.stopRetry) {
		m.armStopsLocked(s)
		m.mu.Unlock()
		return
	}
	m.ops[s.name] = &admin.Operation{Kind: admin.OpStop, Service: s.name, Pool: pool, Started: now,
		Message: fmt.Sprintf("stopping the containers of pool %q", pool)}
	ctx := m.runCtx
	m.wg.Add(1)
	m.mu.Unlock()
	defer m.wg.Done()
	defer m.endOp(s.name)
	m.stopPool(ctx, s, pool)
}

// stopPool stops pool's containers, then drops its entry from the desired
// state, and records both in the history.
func (m *Manager) stopPool(ctx context.Context, s *service, pool string) {
	e := history.Entry{Kind: history.KindStop, Service: s.name, From: pool, Started: time.Now()}
	id := m.beginEntry(e)
	var stopped []string
	err := errors.New("this cutover has no Docker connection to stop containers with")
	if m.stopper != nil {
		sctx, cancel := context.WithTimeout(ctx, stopTimeout)
		stopped, err = m.stopper.StopPool(sctx, s.name, pool)
		cancel()
	}
	if err != nil && ctx.Err() != nil {
		// Shutting down: the entry stays, and the next start stops it.
		e.Result, e.Reason = history.ResultFailed, fmt.Sprintf("cutover stopped while stopping pool %q; it stops it again at the next start: %v", pool, err)
		m.endEntry(id, e)
		return
	}
	// A stop that failed is not tried again (the engine said why; the
	// history and log keep it): its entry goes as well.
	_, _, cerr := m.change(context.Background(), s, func(cur state.Service) (state.Service, error) {
		delete(cur.StopAt, pool)
		if len(cur.StopAt) == 0 {
			cur.StopAt = nil
		}
		return cur, nil
	}, nil)
	if cerr != nil {
		m.mu.Lock()
		s.stopRetry = time.Now().Add(stopRetryDelay)
		m.mu.Unlock()
		m.log.Error("the end of a scheduled stop could not be written to the state; it is done again later", "service", s.name, "pool", pool, "error", cerr)
	}
	switch {
	case err != nil:
		e.Result, e.Reason = history.ResultFailed, fmt.Sprintf("stopping the containers of pool %q failed: %v — stop them yourself (docker stop)", pool, err)
		m.log.Error("scheduled stop of a pool failed", "service", s.name, "pool", pool, "error", err)
	case len(stopped) == 0:
		e.Result, e.Reason = history.ResultSucceeded, fmt.Sprintf("pool %q had no running container to stop", pool)
	default:
		e.Result, e.Reason = history.ResultSucceeded, fmt.Sprintf("stopped the containers of pool %q: %s", pool, strings.Join(stopped, ", "))
		m.log.Info("scheduled stop of a pool done", "service", s.name, "pool", pool, "containers", strings.Join(stopped, ", "))
	}
	if cerr != nil {
		e.Warnings = append(e.Warnings, "the state could not be written, so the stop is done again later: "+cerr.Error())
	}
	m.endEntry(id, e)
}
