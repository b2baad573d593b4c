// Package rules is the one copy of the deploy rules: what a deploy,
// rollback, promote or abort of a service may do given its desired state,
// and the desired state it commits next. They depend on the desired state
// alone (state.Service), so the control plane of every instance and the
// CLI that commits to a shared store itself (package remote) apply the same
// rules; what needs a running proxy (pools, targets, health, the guard's
// numbers) stays in the control plane.
package rules

import (
	"fmt"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// Errorf is an admin API error of kind.
func Errorf(kind admin.ErrorKind, format string, args ...any) *admin.Error {
	return &admin.Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

func errorf(kind admin.ErrorKind, format string, args ...any) *admin.Error {
	return Errorf(kind, format, args...)
}

// Timeout is an operation's health-wait timeout, or the default.
func Timeout(d admin.Duration) time.Duration {
	if d <= 0 {
		return admin.DefaultTimeout
	}
	return time.Duration(d)
}

// OrNone names a pool in a message ("none" for no pool).
func OrNone(pool string) string {
	if pool == "" {
		return "none"
	}
	return pool
}

// Percent is a canary weight as a percentage of the clients.
func Percent(w uint32) float64 { return float64(w) * 100 / route.WeightScale }

// PercentOf is a canary weight for a message ("10%").
func PercentOf(w uint32) string { return fmt.Sprintf("%g%%", Percent(w)) }

// Expected refuses an operation whose caller expected another pool to be
// active (expect "" expects nothing): a burst of retries of one rollback
// then flips the service once.
func Expected(kind, service, to, expect, active string) error {
	if expect == "" || expect == active {
		return nil
	}
	return errorf(admin.KindRefused, "%s of service %q to pool %q refused: the caller expected pool %q to be active, but %q is (another change came first) — look at cutover status, then retry if it is still wanted",
		kind, service, to, expect, OrNone(active))
}

// PoolName refuses a missing or malformed pool name of a deploy.
func PoolName(pool string) error {
	if pool == "" {
		return errorf(admin.KindInvalid, "no pool given — name the pool to deploy, e.g. cutover deploy green")
	}
	if !config.ValidName(pool) {
		return errorf(admin.KindInvalid, "pool name %q is not valid — use lowercase letters, digits, '-' and '_' (at most 63), e.g. green", pool)
	}
	return nil
}

// CheckTargets refuses run-time targets that are not HOST:PORT or are
// given twice.
func CheckTargets(specs []upstream.TargetSpec) error {
	seen := map[string]bool{}
	for _, ts := range specs {
		if err := config.ValidateTarget(ts.Addr); err != nil {
			return &admin.Error{Kind: admin.KindInvalid, Message: "target " + err.Error()}
		}
		if seen[ts.Addr] {
			return errorf(admin.KindInvalid, "target %s is given twice — list each target once", ts.Addr)
		}
		seen[ts.Addr] = true
	}
	return nil
}

// Deploy is a deploy to be checked against the desired state.
type Deploy struct {
	Service, Pool, Expect string
	// Preview: only the preview hosts are to reach Pool.
	Preview bool
	// Trial: a canary or guard follows the health gate.
	Trial bool
}

// Check returns the refusal of d by the desired state cur (nil: allowed).
func (d Deploy) Check(cur state.Service) error {
	if err := Expected(admin.OpDeploy, d.Service, d.Pool, d.Expect, cur.Active); err != nil {
		return err
	}
	if c := cur.Canary; c != "" && (c != d.Pool || d.Trial) {
		return errorf(admin.KindRefused, "deploy of service %q to pool %q refused: pool %q is a canary taking %s of its clients — run cutover promote (the full switch to %q) or cutover abort first",
			d.Service, d.Pool, c, PercentOf(cur.Weight), c)
	}
	if d.Preview && cur.Active == d.Pool {
		return errorf(admin.KindRefused, "pool %q is already the stable pool of service %q: there is nothing to preview — deploy the idle pool with --preview", d.Pool, d.Service)
	}
	if d.Trial && cur.Active == "" {
		return errorf(admin.KindRefused, "a canary or guard of service %q needs a stable pool to compare with and fall back to, and it has none — deploy %q without --canary/--guard first", d.Service, d.Pool)
	}
	return nil
}

// NoOp is the result of a deploy of the pool that is active already.
func NoOp(service, pool string) *admin.DeployResult {
	return &admin.DeployResult{
		Service: service, Operation: admin.OpDeploy, NoOp: true, Pool: pool, From: pool,
		Message: fmt.Sprintf("pool %q is already active for service %q: nothing to do", pool, service),
	}
}

// ActiveTargets is the refusal of a deploy that would change the targets
// of the active pool; idle names the pools that could take them.
func ActiveTargets(service, pool, idle string) error {
	return errorf(admin.KindRefused, "pool %q is the active pool of service %q: its targets cannot be changed by a deploy — deploy the idle pool (%s) with --target instead, then this one is idle",
		pool, service, idle)
}

// Rollback returns the pool a rollback of cur switches to, or its refusal.
func Rollback(cur state.Service, service, expect string) (string, error) {
	prev := cur.Previous
	if err := Expected(admin.OpRollback, service, prev, expect, cur.Active); err != nil {
		return "", err
	}
	if c := cur.Canary; c != "" {
		return "", errorf(admin.KindRefused, "rollback of service %q refused: pool %q is a canary taking %s of its clients while %q stays stable — cutover abort sends every client back to %q", service, c, PercentOf(cur.Weight), cur.Active, cur.Active)
	}
	if prev == "" {
		return "", errorf(admin.KindRefused, "service %q has no previous pool to roll back to (active: %s) — a rollback is possible after a deploy has switched pools", service, OrNone(cur.Active))
	}
	return prev, nil
}

// Held returns the pool a promote or abort (verb) of cur acts on: the
// canary, else the preview pool; refused when there is neither.
func Held(cur state.Service, service, verb string) (string, error) {
	switch {
	case cur.Canary != "":
		return cur.Canary, nil
	case cur.Preview != "":
		return cur.Preview, nil
	}
	return "", errorf(admin.KindRefused, "%s of service %q refused: it has no canary or preview pool (stable: %s) — start one with cutover deploy POOL --canary 10 or --preview", verb, service, OrNone(cur.Active))
}

// Switch makes a pool the stable one (deploy, rollback, promote).
type Switch struct {
	Kind, Service, Pool string
	// Expect is the pool the caller expects to be active ("" any).
	Expect string
	// Targets, when not nil, become the pool's run-time targets.
	Targets []upstream.TargetSpec
	// StopOldAt, when set, schedules the stop of the pool that loses its
	// traffic (see state.Service.StopAt).
	StopOldAt time.Time
}

// Next is the desired state after the switch, or its refusal.
func (sw Switch) Next(cur state.Service) (state.Service, error) {
	if err := Expected(sw.Kind, sw.Service, sw.Pool, sw.Expect, cur.Active); err != nil {
		return cur, err
	}
	from := cur.Active
	if from != sw.Pool {
		cur.Previous = from
	}
	cur.Active = sw.Pool
	if cur.Preview == sw.Pool {
		cur.Preview = "" // promoted: it serves every host now
	}
	if cur.Canary == sw.Pool {
		cur.Canary, cur.Weight = "", 0 // promoted: it takes every client now
	}
	if sw.Targets != nil {
		cur.SetTargets(sw.Pool, sw.Targets)
	}
	if !sw.StopOldAt.IsZero() && from != "" && from != sw.Pool {
		// Committed with the switch itself: once the switch has
		// happened, the stop happens too, whatever becomes of the caller.
		cur.ScheduleStop(from, sw.StopOldAt)
	}
	cur.DropRouted()
	return cur, nil
}

// Preview is the desired state with pool behind the preview hosts
// (targets, when not nil, its run-time targets).
func Preview(cur state.Service, pool string, targets []upstream.TargetSpec) state.Service {
	cur.Preview = pool
	if targets != nil {
		cur.SetTargets(pool, targets)
	}
	cur.DropRouted()
	return cur
}

// Drop is the desired state with pool no longer a canary or the preview
// (abort).
func Drop(cur state.Service, pool string) state.Service {
	if cur.Canary == pool {
		cur.Canary, cur.Weight = "", 0
	}
	if cur.Preview == pool {
		cur.Preview = ""
	}
	return cur
}

// WaitingProgress is an instance's unready targets as the admin API shows
// them (one entry without a target when it has not reported).
func WaitingProgress(w state.Waiting) []admin.TargetProgress {
	if len(w.Targets) == 0 {
		return []admin.TargetProgress{{Instance: w.Instance, Error: w.String()}}
	}
	out := make([]admin.TargetProgress, len(w.Targets))
	for i, t := range w.Targets {
		out[i] = admin.TargetProgress{Instance: w.Instance, Addr: t.Addr, Passes: t.Passes, Needed: t.Needed, Error: t.Error}
	}
	return out
}

// TrialEnded says what a service serves once the trial of another
// instance acted on it: d is its desired state after.
func TrialEnded(service string, d state.Service) string {
	if d.Canary != "" {
		return fmt.Sprintf("the canary %q still takes %s of service %q", d.Canary, PercentOf(d.Weight), service)
	}
	return fmt.Sprintf("%q takes every client of service %q", d.Active, service)
}

// TrialDidNothing reports that a trial asked to end (verb) left the
// desired state as it was before: its holder went away without acting.
func TrialDidNothing(verb string, before, after state.Service) bool {
	return after.Active == before.Active && after.Canary == before.Canary && (after.Canary != "" || verb == admin.OpAbort)
}

// StoreStatus is the admin API's view of the shared store from sh. An
// instance's own (instance) marks it among the live ones and lists it even
// when its registration is missing; the CLI's has no instance of its own
// (sh.Instance names the CLI only in the deploy lock).
func StoreStatus(sh state.SharedStatus, instance bool) *admin.StoreStatus {
	out := &admin.StoreStatus{Kind: admin.StoreEtcd, Where: sh.Where, Problem: sh.Problem, Stale: sh.Problem != "", Latest: sh.Latest}
	if instance {
		out.Instance, out.Applied = sh.Instance, sh.Applied
	}
	self := false
	for _, is := range sh.Instances {
		me := instance && is.Name == sh.Instance
		out.Instances = append(out.Instances, admin.InstanceStatus{Name: is.Name, Applied: is.Applied, Behind: is.Behind, Self: me})
		self = self || me
	}
	if instance && !self {
		out.Instances = append(out.Instances, admin.InstanceStatus{Name: sh.Instance, Applied: sh.Applied, Self: true, Stale: out.Stale})
	}
	return out
}
