// Package remote deploys, rolls back, promotes and aborts services whose
// desired state several cutovers share through etcd, without going
// through any of them (cutover deploy --etcd). It does what an instance's
// deploy does with the shared store, in the same order and with the same
// keys: it takes the service's deploy lock (a key under its own lease, so a
// crashed CLI's lock expires), which announces the change; every live
// instance then checks the pool itself and publishes its readiness; once
// every one reports the pool ready, the next desired state — computed by
// package rules, as an instance computes it — is committed with one
// compare-and-swap on the service's key against the revision read at the
// start, and every instance applies it through its watch (the same routing
// swap and drain as for a change it made itself). A refusal at any step
// commits nothing.
package remote

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/rules"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/human"
)

// Store is what a remote change needs of the shared store
// (*etcdstore.Store opened with OpenClient).
type Store interface {
	Where() string
	Problem() string
	Load(ctx context.Context) (map[string]state.Service, error)
	Commit(ctx context.Context, changes []state.Change) (int64, error)
	Lock(ctx context.Context, i state.Intent) (release func(), err error)
	AwaitReady(ctx context.Context, i state.Intent, wait func([]state.Waiting)) error
	Status(ctx context.Context) state.SharedStatus
	AwaitApplied(ctx context.Context, rev int64, wait func(applied, behind []string)) error
	EndTrial(ctx context.Context, service, action string) (holder state.Intent, rev int64, err error)
}

// ApplyTimeout bounds the wait for every live instance to report that it
// applied a committed change. The change is committed by then: an
// instance that is late applies it when it can, and the result says which.
const ApplyTimeout = 10 * time.Second

// Options configure a Client.
type Options struct {
	Store Store
	// Name names the caller in the deploy lock, where a refused deploy
	// sees who holds it.
	Name string
	// Config is the instances' configuration (nil: none). A service no
	// change has stored yet is served by its services.<name>.active, which
	// only the configuration knows.
	Config *config.Config
}

// Client makes changes through the shared store. Its methods take and
// return what the admin API's do, so the CLI prints either alike.
type Client struct{ o Options }

// New returns a client of o.Store.
func New(o Options) *Client { return &Client{o: o} }

// change is one gated commit.
type change struct {
	kind, service, pool string
	cur                 state.Service
	targets             []upstream.TargetSpec
	// gate: every live instance must see the pool ready first, within
	// timeout.
	gate    bool
	timeout time.Duration
	next    func(state.Service) (state.Service, error)
}

// Deploy switches a service to a pool (or puts it behind the preview
// hosts) once every live instance sees it healthy. Canary steps and the
// guard run inside an instance, on its own traffic: deploy through an
// instance's admin API for those.
func (c *Client) Deploy(ctx context.Context, req admin.DeployRequest, progress func(admin.Event)) (*admin.DeployResult, error) {
	if err := rules.PoolName(req.Pool); err != nil {
		return nil, err
	}
	if len(req.Canary) > 0 || req.Guard != nil || req.Step > 0 || req.Detach || req.StopOld != nil {
		return nil, &admin.Error{Kind: admin.KindInvalid, Message: "--canary, --step, --guard, --detach and --stop-old run inside cutover serve, on the traffic it proxies — deploy through an instance's admin API instead (--socket PATH, or -c FILE without --etcd)"}
	}
	var specs []upstream.TargetSpec
	for _, a := range req.Targets {
		specs = append(specs, upstream.TargetSpec{Addr: a})
	}
	if err := rules.CheckTargets(specs); err != nil {
		return nil, err
	}
	name, cur, err := c.current(ctx, req.Service, admin.OpDeploy, req.Pool)
	if err != nil {
		return nil, err
	}
	if err := (rules.Deploy{Service: name, Pool: req.Pool, Expect: req.Expect, Preview: req.Preview}).Check(cur); err != nil {
		return nil, err
	}
	if cur.Active == req.Pool {
		if len(specs) > 0 && !sameTargets(cur.Targets[req.Pool], specs) {
			return nil, rules.ActiveTargets(name, req.Pool, c.idle(name, cur))
		}
		return rules.NoOp(name, req.Pool), nil
	}
	ch := change{kind: admin.OpDeploy, service: name, pool: req.Pool, cur: cur, targets: specs, gate: true, timeout: rules.Timeout(req.Timeout)}
	ch.next = func(cur state.Service) (state.Service, error) {
		if req.Preview {
			return rules.Preview(cur, req.Pool, specs), nil
		}
		return rules.Switch{Kind: admin.OpDeploy, Service: name, Pool: req.Pool, Expect: req.Expect, Targets: specs}.Next(cur)
	}
	return c.commit(ctx, ch, progress)
}

// Rollback switches a service back to its previous pool once every live
// instance sees it ready (an instance whose checks of it kept passing
// reports at once).
func (c *Client) Rollback(ctx context.Context, req admin.RollbackRequest, progress func(admin.Event)) (*admin.DeployResult, error) {
	name, cur, err := c.current(ctx, req.Service, admin.OpRollback, "")
	if err != nil {
		return nil, err
	}
	pool, err := rules.Rollback(cur, name, req.Expect)
	if err != nil {
		return nil, err
	}
	sw := rules.Switch{Kind: admin.OpRollback, Service: name, Pool: pool, Expect: req.Expect}
	return c.commit(ctx, change{kind: admin.OpRollback, service: name, pool: pool, cur: cur, gate: true, timeout: rules.Timeout(req.Timeout), next: sw.Next}, progress)
}

// Promote ends the canary or guard an instance runs for the service with
// the full switch (that instance does it), or makes a held canary or
// preview pool the stable pool: a deploy of that pool.
func (c *Client) Promote(ctx context.Context, req admin.TrialRequest, progress func(admin.Event)) (*admin.DeployResult, error) {
	name, cur, err := c.current(ctx, req.Service, admin.OpPromote, "")
	if err != nil {
		return nil, err
	}
	if res, done, err := c.endTrial(ctx, name, admin.OpPromote, cur, rules.Timeout(req.Timeout), progress); done {
		return res, err
	}
	if name, cur, err = c.current(ctx, name, admin.OpPromote, ""); err != nil {
		return nil, err
	}
	pool, err := rules.Held(cur, name, admin.OpPromote)
	if err != nil {
		return nil, err
	}
	return c.Deploy(ctx, admin.DeployRequest{Service: name, Pool: pool, Timeout: req.Timeout}, progress)
}

// Abort ends the canary or guard an instance runs for the service (that
// instance sends every client back to the stable pool), or takes a held
// canary or preview pool out of the routing (no health gate: every
// request goes to the stable pool, which serves).
func (c *Client) Abort(ctx context.Context, req admin.TrialRequest, progress func(admin.Event)) (*admin.DeployResult, error) {
	name, cur, err := c.current(ctx, req.Service, admin.OpAbort, "")
	if err != nil {
		return nil, err
	}
	if res, done, err := c.endTrial(ctx, name, admin.OpAbort, cur, rules.Timeout(req.Timeout), progress); done {
		return res, err
	}
	if name, cur, err = c.current(ctx, name, admin.OpAbort, ""); err != nil {
		return nil, err
	}
	pool, err := rules.Held(cur, name, admin.OpAbort)
	if err != nil {
		return nil, err
	}
	next := func(cur state.Service) (state.Service, error) { return rules.Drop(cur, pool), nil }
	return c.commit(ctx, change{kind: admin.OpAbort, service: name, pool: pool, cur: cur, next: next}, progress)
}

// endTrial hands a promote or abort (verb) to the instance whose canary or
// guard holds the service's deploy lock, as a promote or abort through an
// instance does, and waits until every live instance applied what the
// trial did. done is false when no trial holds the lock, or its holder
// went away without acting: the caller then ends a held canary or preview
// itself.
func (c *Client) endTrial(ctx context.Context, service, verb string, before state.Service, timeout time.Duration, progress func(admin.Event)) (res *admin.DeployResult, done bool, err error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	holder, rev, err := c.o.Store.EndTrial(actx, service, verb)
	var le *state.LockedError
	switch {
	case errors.Is(err, state.ErrNoTrial):
		return nil, false, nil
	case errors.As(err, &le):
		return nil, true, rules.Errorf(admin.KindBusy, "%s of service %q refused: %v", verb, service, err)
	case err != nil && actx.Err() != nil:
		return nil, true, rules.Errorf(admin.KindCanceled, "%s of service %q: %v — cutover status --etcd shows where it is; retry to ask again", verb, service, err)
	case err != nil:
		return nil, true, unreachable(verb, service, "", err.Error())
	}
	stored, err := c.o.Store.Load(ctx)
	if err != nil {
		return nil, true, unreachable(verb, service, "", err.Error())
	}
	d := stored[service]
	if rules.TrialDidNothing(verb, before, d) {
		return nil, false, nil // its holder went away without acting
	}
	ch := change{kind: verb, service: service, pool: holder.Pool}
	progress(event(ch, admin.PhaseSwitch, fmt.Sprintf("instance %s, which runs the %s of %q, did the %s: revision %d", holder.Instance, holder.Trial, holder.Pool, verb, rev)))
	res = &admin.DeployResult{Service: service, Operation: verb, Pool: d.Active, From: holder.Pool, Revision: rev}
	res.Message = fmt.Sprintf("%s of %q done by instance %s, which runs its %s: %s at revision %d", verb, holder.Pool, holder.Instance, holder.Trial, rules.TrialEnded(service, d), rev)
	c.awaitApplied(ctx, ch, rev, res, progress)
	return res, true, nil
}

// awaitApplied waits (up to ApplyTimeout) until every live instance
// applied revision rev, and notes in res who did, or who is behind.
func (c *Client) awaitApplied(ctx context.Context, ch change, rev int64, res *admin.DeployResult, progress func(admin.Event)) {
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, ApplyTimeout)
	defer cancel()
	var behind []string
	seen := map[string]bool{}
	err := c.o.Store.AwaitApplied(actx, rev, func(applied, b []string) {
		behind = b
		for _, n := range applied {
			if !seen[n] {
				seen[n] = true
				res.AppliedBy = append(res.AppliedBy, n)
				progress(event(ch, admin.PhaseSwitch, fmt.Sprintf("instance %s applied revision %d (%s after this command saw it committed)", n, rev, human.Duration(time.Since(start)))))
			}
		}
	})
	if err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("not every instance reported applying revision %d within %s (still behind: %s): the change is committed, and each applies it once it reaches etcd — cutover status --etcd shows where each is",
			rev, ApplyTimeout, strings.Join(behind, ", ")))
		return
	}
	res.Message += fmt.Sprintf("; applied by %s, each draining what lost traffic on its own", strings.Join(res.AppliedBy, ", "))
}

// current finds the service (the only one when name is "") and its
// desired state now.
func (c *Client) current(ctx context.Context, name, kind, pool string) (string, state.Service, error) {
	st := c.o.Store
	stored, err := st.Load(ctx)
	if p := st.Problem(); err != nil || p != "" {
		if p == "" {
			p = err.Error()
		}
		return "", state.Service{}, unreachable(kind, name, pool, p)
	}
	known := map[string]bool{}
	for n := range stored {
		known[n] = true
	}
	if c.o.Config != nil {
		for _, sc := range c.o.Config.Services {
			known[sc.Name] = true
		}
	}
	names := slices.Sorted(maps.Keys(known))
	if name == "" {
		switch len(names) {
		case 1:
			name = names[0]
		case 0:
			return "", state.Service{}, rules.Errorf(admin.KindNotFound, "%s refused: %s holds no service — check --etcd-prefix, or give the instances' configuration with -c FILE", kind, st.Where())
		default:
			return "", state.Service{}, rules.Errorf(admin.KindInvalid, "%s holds %d services (%s): name one with -s SERVICE", st.Where(), len(names), strings.Join(names, ", "))
		}
	}
	if cur, ok := stored[name]; ok {
		return name, cur, nil
	}
	if c.o.Config != nil {
		if sc, ok := c.o.Config.Service(name); ok {
			// Not switched yet: every instance serves the configured
			// pool, with revision 0 (the key does not exist).
			return name, state.Service{Active: sc.Active}, nil
		}
	}
	return "", state.Service{}, rules.Errorf(admin.KindNotFound, "no service %q in %s (the services there: %s) — check -s and --etcd-prefix; a service that no deploy has switched yet is only in the instances' configuration: give it with -c FILE",
		name, st.Where(), orList(names))
}

// commit takes the deploy lock, waits for every live instance when the
// change is gated, commits the next value against the revision it was
// computed from, and waits for the instances to apply it.
func (c *Client) commit(ctx context.Context, ch change, progress func(admin.Event)) (*admin.DeployResult, error) {
	if progress == nil {
		progress = func(admin.Event) {}
	}
	st := c.o.Store
	live := ch.cur.Active
	refused := func(kind admin.ErrorKind, why string) *admin.Error {
		return rules.Errorf(kind, "%s of service %q to pool %q refused: %s — live traffic stays on %q", ch.kind, ch.service, ch.pool, why, rules.OrNone(live))
	}
	ss := st.Status(ctx)
	if ss.Problem != "" {
		return nil, unreachable(ch.kind, ch.service, ch.pool, ss.Problem)
	}
	if len(ss.Instances) == 0 {
		return nil, refused(admin.KindRefused, fmt.Sprintf("no cutover instance is live in %s, so none could check the pool or apply the change — start cutover serve with this store.etcd, or check --etcd-prefix", st.Where()))
	}
	var names []string
	for _, is := range ss.Instances {
		names = append(names, is.Name)
	}
	i := state.Intent{ID: state.NewIntentID(), Kind: ch.kind, Service: ch.service, Pool: ch.pool, Instance: c.o.Name, Started: time.Now()}
	for _, t := range ch.targets {
		i.Targets = append(i.Targets, state.Target{Addr: t.Addr, Label: t.Label})
	}
	release, err := st.Lock(ctx, i)
	if err != nil {
		var le *state.LockedError
		if errors.As(err, &le) {
			return nil, rules.Errorf(admin.KindBusy, "%s of service %q to pool %q refused: %v", ch.kind, ch.service, ch.pool, err)
		}
		return nil, unreachable(ch.kind, ch.service, ch.pool, err.Error())
	}
	defer release()
	start := time.Now()
	var took time.Duration
	if ch.gate {
		progress(event(ch, admin.PhaseHealth, fmt.Sprintf("took the deploy lock of service %q in %s; every live instance (%s) checks %q", ch.service, st.Where(), strings.Join(names, ", "), ch.pool)))
		if err := c.awaitReady(ctx, ch, i, start.Add(ch.timeout), progress, refused); err != nil {
			return nil, err
		}
		took = time.Since(start)
	}
	nx, err := ch.next(ch.cur.Clone())
	if err != nil {
		return nil, err
	}
	rev, err := st.Commit(ctx, []state.Change{{Service: ch.service, Value: &nx, Revision: ch.cur.Revision}})
	if errors.Is(err, state.ErrConflict) {
		return nil, refused(admin.KindRefused, err.Error())
	}
	if err != nil {
		return nil, unreachable(ch.kind, ch.service, ch.pool, err.Error())
	}
	switched := time.Now()
	res := &admin.DeployResult{Service: ch.service, Operation: ch.kind, Pool: nx.Active, From: ch.cur.Active,
		TimeToHealthy: admin.Duration(took), SwitchedAt: switched, Revision: rev}
	what := fmt.Sprintf("service %q switched from %q to %q", ch.service, rules.OrNone(ch.cur.Active), nx.Active)
	switch {
	case nx.Preview == ch.pool && nx.Active != ch.pool:
		res.Preview = ch.pool
		what = fmt.Sprintf("%q is the preview of service %q; live traffic stays on %q", ch.pool, ch.service, nx.Active)
	case ch.kind == admin.OpAbort:
		res.From = ch.pool
		what = fmt.Sprintf("aborted %q: service %q is served by %q alone", ch.pool, ch.service, nx.Active)
	}
	progress(event(ch, admin.PhaseSwitch, fmt.Sprintf("committed revision %d to %s: %s; every instance applies it through its watch", rev, st.Where(), what)))
	res.Message = fmt.Sprintf("%s at revision %d", what, rev)
	if took > 0 {
		res.Message += fmt.Sprintf(" (every live instance saw %q healthy after %s)", ch.pool, human.Duration(took))
	}
	c.awaitApplied(ctx, ch, rev, res, progress)
	return res, nil
}

// awaitReady waits until every live instance sees the pool ready, and
// refuses at once when one cannot check it at all (no such service or
// pool there).
func (c *Client) awaitReady(ctx context.Context, ch change, i state.Intent, deadline time.Time, progress func(admin.Event), refused func(admin.ErrorKind, string) *admin.Error) error {
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	problem := ""
	err := c.o.Store.AwaitReady(actx, i, func(ws []state.Waiting) {
		if len(ws) == 0 {
			progress(event(ch, admin.PhaseHealth, fmt.Sprintf("every live instance sees pool %q ready", ch.pool)))
			return
		}
		for _, w := range ws {
			ev := event(ch, admin.PhaseHealth, w.String())
			if len(w.Targets) > 0 {
				tp := rules.WaitingProgress(w)[0]
				ev.Target = &tp
			}
			progress(ev)
			if w.Problem != "" && problem == "" {
				problem = w.String()
				cancel()
			}
		}
	})
	var nr *state.NotReadyError
	switch {
	case err == nil:
		return nil
	case problem != "":
		return refused(admin.KindNotFound, problem)
	case ctx.Err() != nil:
		return rules.Errorf(admin.KindCanceled, "%s of service %q to pool %q canceled before the switch — live traffic untouched", ch.kind, ch.service, ch.pool)
	case errors.As(err, &nr):
		e := refused(admin.KindUnhealthy, fmt.Sprintf("%v (--timeout %s)", err, human.Duration(ch.timeout)))
		for _, w := range nr.Waiting {
			e.Failing = append(e.Failing, rules.WaitingProgress(w)...)
		}
		return e
	}
	return unreachable(ch.kind, ch.service, ch.pool, err.Error())
}

// idle names the pools of a service other than its active one, for a
// message.
func (c *Client) idle(service string, cur state.Service) string {
	pools := map[string]bool{}
	for p := range cur.Targets {
		pools[p] = true
	}
	if c.o.Config != nil {
		if sc, ok := c.o.Config.Service(service); ok {
			for _, p := range sc.Pools {
				pools[p.Name] = true
			}
		}
	}
	delete(pools, cur.Active)
	if len(pools) == 0 {
		return "a new pool name"
	}
	return strings.Join(slices.Sorted(maps.Keys(pools)), " or ")
}

func sameTargets(have []state.Target, want []upstream.TargetSpec) bool {
	if len(have) != len(want) {
		return false
	}
	a := make([]string, len(have))
	for i, t := range have {
		a[i] = t.Addr
	}
	b := make([]string, len(want))
	for i, t := range want {
		b[i] = t.Addr
	}
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// unreachable is the refusal of a change the store could not take.
func unreachable(kind, service, pool, why string) *admin.Error {
	what := fmt.Sprintf("%s of service %q", kind, service)
	if pool != "" {
		what += fmt.Sprintf(" to pool %q", pool)
	}
	return rules.Errorf(admin.KindState, "%s refused: %s — nothing changed; check --etcd (the members' client URLs), the TLS and user settings of -c FILE's store.etcd, and that the etcd cluster has a quorum", what, why)
}

func event(ch change, phase, msg string) admin.Event {
	return admin.Event{Time: time.Now(), Service: ch.service, Pool: ch.pool, Phase: phase, Message: msg}
}

func orList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// Status is every service's desired state in the store (or the named
// one's), with the configuration's services not switched yet, and the
// live instances with the revision each applied. Pools and their health
// are each instance's own: ask an instance for those.
func (c *Client) Status(ctx context.Context, service string) (*admin.StatusResponse, error) {
	st := c.o.Store
	stored, err := st.Load(ctx)
	if p := st.Problem(); err != nil || p != "" {
		if p == "" {
			p = err.Error()
		}
		return nil, rules.Errorf(admin.KindState, "%s — check --etcd (the members' client URLs), the TLS and user settings of -c FILE's store.etcd, and that the etcd cluster has a quorum", p)
	}
	all := map[string]state.Service{}
	maps.Copy(all, stored)
	if c.o.Config != nil {
		for _, sc := range c.o.Config.Services {
			if _, ok := all[sc.Name]; !ok {
				all[sc.Name] = state.Service{Active: sc.Active}
			}
		}
	}
	if _, ok := all[service]; service != "" && !ok {
		return nil, rules.Errorf(admin.KindNotFound, "no service %q in %s (the services there: %s)", service, st.Where(), orList(slices.Sorted(maps.Keys(all))))
	}
	out := &admin.StatusResponse{Services: []admin.ServiceStatus{}}
	for _, name := range slices.Sorted(maps.Keys(all)) {
		if service != "" && name != service {
			continue
		}
		d := all[name]
		ss := admin.ServiceStatus{Name: name, Active: d.Active, Previous: d.Previous, Preview: d.Preview, Revision: d.Revision, Pools: []admin.PoolStatus{}}
		if d.Canary != "" {
			ss.Canary, ss.CanaryPercent = d.Canary, rules.Percent(d.Weight)
		}
		out.Services = append(out.Services, ss)
	}
	out.Store = rules.StoreStatus(st.Status(ctx), false)
	return out, nil
}
