// Package controlplane is the runtime behind a serving cutover: it builds
// the routing table from the configuration, runs health checks on every
// pool, switches services between pools (deploy, rollback) with a health
// gate and a drain, applies reloaded configurations without dropping
// connections, and keeps the runtime state in state_dir.
//
// The data plane sees none of this: it reads Router().Table(), acquires a
// service's active pool and picks its targets. Everything that changes
// pools happens here.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/health"
	"github.com/cutover/cutover/internal/controlplane/history"
	"github.com/cutover/cutover/internal/controlplane/rules"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/stats"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/metrics"
)

// Options configure a Manager.
type Options struct {
	// Logger receives deploys, rollbacks, reloads and health changes
	// (default: discard).
	Logger *slog.Logger
	// Conn is shared by every target's upstream connections (default:
	// ConnOptions(cfg)).
	Conn *upstream.ConnOptions
	// Metrics records switches, drains, reloads and health probes (nil:
	// none).
	Metrics *metrics.Metrics
	// Stats are the data plane's counts of what each pool served, for
	// status and a deploy's guard (nil: none).
	Stats *stats.Stats
	// Store keeps the desired state instead of the state file (nil: the
	// file in state_dir, or memory without one). A state.Shared store
	// (etcd) is followed: changes made through other instances apply
	// here too.
	Store state.Store
	// OnApply is told of every desired state the routing swapped to, made
	// here or elsewhere, with m.mu held (nil: nobody), and when the swap
	// began: requests sent between then and the call may see either
	// routing.
	OnApply func(service string, d state.Service, began time.Time)
	// Stopper stops the containers of a pool when a scheduled stop comes
	// (state.Service.StopAt); nil: deploys asking for one are refused.
	Stopper PoolStopper
}

// ConnOptions builds the upstream connection options from a configuration.
func ConnOptions(cfg *config.Config) *upstream.ConnOptions {
	o := upstream.DefaultConnOptions()
	if cfg.Upstream.ConnectTimeout > 0 {
		o.ConnectTimeout = cfg.Upstream.ConnectTimeout
	}
	if cfg.Upstream.KeepaliveTimeout > 0 {
		o.KeepaliveTimeout = cfg.Upstream.KeepaliveTimeout
	}
	if cfg.Upstream.MaxIdlePerTarget > 0 {
		o.MaxIdle = cfg.Upstream.MaxIdlePerTarget
	}
	if cfg.Limits.MaxHeaderBytes > o.MaxHeadBytes {
		o.MaxHeadBytes = cfg.Limits.MaxHeaderBytes
	}
	// A configuration built in code may leave the outlier settings zero;
	// Load always fills them.
	if oc := cfg.Upstream.Outlier; oc != (config.Outlier{}) {
		o.Outlier = upstream.OutlierOptions{
			ConsecutiveFailures: oc.ConsecutiveFailures,
			BaseEjection:        oc.BaseEjectionTime,
			MaxEjection:         oc.MaxEjectionTime,
			MaxEjectedPercent:   oc.MaxEjectionPercent,
		}
	}
	return o
}

// retirePoll is how often a drain of removed targets looks at their
// in-flight counts (targets have no signal for it; pools do).
const retirePoll = 20 * time.Millisecond

// Manager is the control plane of one running cutover.
type Manager struct {
	log       *slog.Logger
	conn      *upstream.ConnOptions
	router    *route.Router
	statePath string // "" when state_dir is not set: nothing is persisted
	// store keeps each service's desired state (see change).
	store state.Store
	// orphans are the services the store holds that the configuration
	// does not, with their revisions: the next reload removes them.
	orphans map[string]int64
	prober  *health.Prober
	hist    *history.Log
	metrics *metrics.Metrics
	stats   *stats.Stats
	// shared is store when several cutovers share it (nil otherwise).
	shared  state.Shared
	onApply func(service string, d state.Service, began time.Time)
	// prepared are the pools this instance checks for deploys announced
	// by other instances, by service; guarded by mu.
	prepared map[string]*preparing
	stopper  PoolStopper
	// applied is broadcast after each desired state applied.
	applied signal

	// stateMu serialises changes (commit the next desired state, then
	// apply it); it is taken before mu.
	stateMu sync.Mutex
	// stateProblem is why the state cannot be written now ("" when it
	// can); changes are refused while it is set and the next write that
	// works clears it.
	stateProblem atomic.Pointer[string]

	mu       sync.Mutex
	cfg      *config.Config
	services []*service
	ops      map[string]*admin.Operation
	runCtx   context.Context // nil until Start
	stop     context.CancelFunc
	closed   bool
	// closing is closed by Close: running trials stop where they are.
	closing chan struct{}
	wg      sync.WaitGroup
}

// service is the runtime of one configured service.
type service struct {
	name string
	rs   *route.Service
	// cfg holds the service's settings (health, drain, balance, hosts);
	// checkers read it without locks.
	cfg atomic.Pointer[config.Service]
	// pools by name: the one registry of the service's pools, and order,
	// their names in the order added; guarded by Manager.mu.
	pools map[string]*pool
	order []string
	// desired is the desired state applied now (its routing is rs's);
	// guarded by Manager.mu, changed only by Manager.change.
	desired state.Service
	// trial is the canary or guard running now (nil: none); guarded by
	// Manager.mu.
	trial *trial
	// stopTimer fires at the first of desired.StopAt, not before
	// stopRetry (after a stop whose outcome could not be written);
	// guarded by Manager.mu (see armStopsLocked).
	stopTimer *time.Timer
	stopRetry time.Time
}

// poolList returns the pools in the order added. m.mu must be held.
func (s *service) poolList() []*pool {
	out := make([]*pool, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, s.pools[n])
	}
	return out
}

// removePoolLocked drops a pool from the registry. m.mu must be held.
func (s *service) removePoolLocked(name string) {
	delete(s.pools, name)
	s.order = slices.DeleteFunc(s.order, func(n string) bool { return n == name })
}

func (s *service) settings() health.Settings { return health.FromConfig(s.cfg.Load().Health) }

// pool is the runtime of one pool.
type pool struct {
	up  *upstream.Pool
	svc *service
	// inConfig: declared in the configuration (else created by deploy).
	inConfig bool
	docker   bool
	// cfgTargets are the configuration's targets, to tell on reload
	// whether the file changed them.
	cfgTargets []string
	// runtime are targets set by deploy --target (nil: none); they
	// override the configuration's and are persisted.
	runtime []upstream.TargetSpec
	// checkers by target; guarded by Manager.mu.
	checkers map[*upstream.Target]*runningChecker
	// changed is broadcast after every probe of the pool's targets and
	// every change of its target set.
	changed signal
	// installed: a deploy's candidate pool took its place in the registry.
	installed bool
}

type runningChecker struct {
	c      *health.Checker
	cancel context.CancelFunc
}

func (p *pool) source() string {
	switch {
	case p.runtime != nil:
		return admin.SourceRuntime
	case p.docker:
		return admin.SourceDocker
	case p.inConfig:
		return admin.SourceConfig
	}
	return admin.SourceRuntime
}

// New builds the control plane for cfg (a validated configuration) and
// loads the state from cfg.StateDir. On first start (no state) each
// service's configured active pool serves; afterwards the state's. The
// active pool's targets start Up so they serve at once, as nginx does; every
// other target starts Unknown and takes traffic only after its health
// checks pass. Start begins the health checks.
func New(cfg *config.Config, o Options) (*Manager, error) {
	m := &Manager{
		log:      o.Logger,
		conn:     o.Conn,
		metrics:  o.Metrics,
		stats:    o.Stats,
		prober:   health.NewProber(),
		cfg:      cfg,
		ops:      map[string]*admin.Operation{},
		closing:  make(chan struct{}),
		onApply:  o.OnApply,
		prepared: map[string]*preparing{},
		stopper:  o.Stopper,
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.conn == nil {
		m.conn = ConnOptions(cfg)
	}
	stored := map[string]state.Service{}
	m.store = state.NewMemStore()
	if o.Store != nil {
		m.store = o.Store
		m.shared, _ = o.Store.(state.Shared)
		if cfg.StateDir != "" {
			m.statePath = cfg.StateDir
			if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
				m.log.Warn("state_dir cannot be created: no history, no cache of the shared state", "state_dir", cfg.StateDir, "err", err)
			}
		}
		var err error
		if stored, err = m.store.Load(context.Background()); err != nil {
			return nil, err
		}
	} else if cfg.StateDir != "" {
		// Traffic does not depend on a writable disk: a state_dir that
		// cannot be created or written is reported, the last state that
		// can be read serves, and changes are refused until it can be
		// written (see checkWritable).
		m.statePath = state.Path(cfg.StateDir)
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			m.setStateProblem(fmt.Errorf("create state_dir %s: %w", cfg.StateDir, err))
		}
		m.store = state.NewFileStore(cfg.StateDir)
		var err error
		if stored, err = m.store.Load(context.Background()); err != nil {
			return nil, err
		}
		if m.StateProblem() == "" {
			if err := m.store.Check(context.Background()); err != nil {
				m.setStateProblem(err)
			}
		}
	}
	hist, warning, err := history.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if warning != nil {
		m.log.Warn("history", "warning", warning.Error())
	}
	m.hist = hist
	table := route.NewTable()
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		var ss *state.Service
		if v, ok := stored[sc.Name]; ok {
			ss = &v
		}
		s, err := m.buildService(sc, ss)
		if err != nil {
			return nil, err
		}
		m.services = append(m.services, s)
		table.Add(s.rs, sc.Hosts)
		table.AddPreview(s.rs, sc.PreviewHosts)
	}
	m.orphans = map[string]int64{}
	for _, name := range slices.Sorted(maps.Keys(stored)) {
		// A shared store may hold services of other instances'
		// configurations: they are theirs to remove.
		if _, ok := cfg.Service(name); !ok && m.shared == nil {
			m.orphans[name] = stored[name].Revision
			m.log.Warn("state names a service the configuration no longer has; it is dropped at the next reload",
				"service", name, "state_file", m.statePath)
		}
	}
	m.router = route.NewRouter(table)
	m.publishAppliedLocked()
	return m, nil
}

// buildService makes the runtime of a service, restoring ss when given.
func (m *Manager) buildService(sc *config.Service, ss *state.Service) (*service, error) {
	s := &service{name: sc.Name, rs: route.NewService(sc.Name), pools: map[string]*pool{}}
	cp := *sc
	s.cfg.Store(&cp)
	d := state.Service{Active: sc.Active}
	if ss != nil {
		d = ss.Clone()
	}
	active := d.Active
	if ss != nil {
		_, inCfg := sc.Pool(active)
		_, inState := ss.Targets[active]
		if !inCfg && !inState {
			return nil, fmt.Errorf("state file %s says pool %q of service %q is active, but the configuration%s has no pool %q in services.%s.pools — add the pool back to the configuration, or edit the state file to name another pool as active (or delete it to start from services.%s.active: %s)",
				m.statePath, active, sc.Name, inFile(m.cfg.Path), active, sc.Name, sc.Name, sc.Active)
		}
	}
	bal, _ := upstream.ParseBalance(sc.Balance)
	initial := func(name string) upstream.State {
		if name == active {
			return upstream.Up
		}
		return upstream.Unknown
	}
	for _, pc := range sc.Pools {
		p := m.newPool(s, pc.Name, bal)
		p.inConfig, p.docker, p.cfgTargets = true, pc.FromDocker(), slices.Clone(pc.Targets)
		specs := specsOf(pc.Targets)
		if ss != nil {
			if ts, ok := ss.Targets[pc.Name]; ok {
				p.runtime = fromState(ts)
				specs = p.runtime
			}
		}
		m.setPoolTargets(p, specs, initial(pc.Name))
	}
	if ss != nil {
		for _, name := range ss.Pools() {
			if _, ok := s.pools[name]; ok {
				continue
			}
			p := m.newPool(s, name, bal)
			p.runtime = fromState(ss.Targets[name])
			m.setPoolTargets(p, p.runtime, initial(name))
		}
	}
	if _, ok := s.pools[d.Previous]; d.Previous != "" && !ok {
		m.log.Warn("state names a previous pool the configuration no longer has; rollback is not possible until the next deploy",
			"service", sc.Name, "pool", d.Previous, "state_file", m.statePath)
		d.Previous = ""
	}
	if _, ok := s.pools[d.Canary]; d.Canary != "" && !ok {
		m.log.Warn("state names a canary pool the configuration no longer has; the stable pool takes every client",
			"service", sc.Name, "pool", d.Canary, "state_file", m.statePath)
		d.Canary, d.Weight = "", 0
	}
	if _, ok := s.pools[d.Preview]; d.Preview != "" && !ok {
		m.log.Warn("state names a preview pool the configuration no longer has; the preview hosts get the stable pool",
			"service", sc.Name, "pool", d.Preview, "state_file", m.statePath)
		d.Preview = ""
	}
	for name := range d.StopAt {
		if _, ok := s.pools[name]; !ok {
			m.log.Warn("state schedules a stop of a pool the configuration no longer has; dropped",
				"service", sc.Name, "pool", name, "state_file", m.statePath)
			delete(d.StopAt, name)
		}
	}
	d.DropRouted()
	m.applyLocked(s, d)
	return s, nil
}

// routesFor is the routing of desired state d.
func routesFor(s *service, d state.Service) *route.Routes {
	r := &route.Routes{}
	for _, p := range s.poolList() {
		r.All = append(r.All, p.up)
	}
	if p, ok := s.pools[d.Active]; ok {
		r.Stable = p.up
	}
	if p, ok := s.pools[d.Preview]; ok && d.Preview != "" {
		r.Preview = p.up
	}
	if p, ok := s.pools[d.Canary]; ok && d.Canary != "" && d.Canary != d.Active {
		r.Canary, r.Weight = p.up, d.Weight
	}
	return r
}

// applied is what one swap of a service's routing did.
type applied struct {
	// lost are the pools that no longer get requests: their requests
	// running now are the ones to drain.
	lost []*upstream.Pool
	// at is taken just before the swap, so that no request routed by the
	// new snapshot is dispatched before it (a time taken after the call
	// returns can be late by a descheduling, and requests of the new
	// routing would then seem to come before the switch).
	at time.Time
}

// applyLocked makes d the service's desired state and swaps its routing in
// one atomic step. m.mu must be held (or the service not yet shared).
func (m *Manager) applyLocked(s *service, d state.Service) applied {
	s.desired = d
	m.armStopsLocked(s)
	next := routesFor(s, d)
	at := time.Now()
	lost := s.rs.Apply(next).Lost(next)
	if m.onApply != nil {
		m.onApply(s.name, d, at)
	}
	m.publishAppliedLocked()
	m.applied.Broadcast()
	return applied{lost: lost, at: at}
}

func inFile(path string) string {
	if path == "" {
		return ""
	}
	return " " + path
}

func (m *Manager) newPool(s *service, name string, bal upstream.Balance) *pool {
	p := m.makePool(s, name, bal)
	s.pools[name] = p
	s.order = append(s.order, name)
	return p
}

// makePool makes a pool of s that is not registered (a deploy's candidate).
func (m *Manager) makePool(s *service, name string, bal upstream.Balance) *pool {
	return &pool{up: upstream.NewPool(name, bal), svc: s, checkers: map[*upstream.Target]*runningChecker{}}
}

// installCandidateLocked puts a candidate pool in the place of the pool of
// its name (which is not active), or adds it. The pool it replaces stops
// being checked and its targets are retired. m.mu must be held.
func (m *Manager) installCandidateLocked(s *service, cand *pool) {
	name := cand.up.Name()
	if old, ok := s.pools[name]; ok {
		m.stopCheckers(old)
		m.retireTargets(old.up.Targets(), s.cfg.Load(), old.up)
	} else {
		s.order = append(s.order, name)
	}
	s.pools[name] = cand
	cand.installed = true
}

// discardCandidate drops a candidate pool that did not take its pool's
// place (nothing was ever routed to it).
func (m *Manager) discardCandidate(cand *pool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cand.installed {
		return
	}
	m.stopCheckers(cand)
	for _, t := range cand.up.Targets() {
		t.Retire()
	}
}

// setPoolTargets replaces a pool's targets and keeps one checker per
// target. It returns the targets that left; the caller retires them with
// retireTargets. Call with m.mu held (or before the Manager is shared).
func (m *Manager) setPoolTargets(p *pool, specs []upstream.TargetSpec, initial upstream.State) []*upstream.Target {
	removed := p.up.SetTargets(specs, func(ts upstream.TargetSpec) *upstream.Target {
		return upstream.NewTarget(upstream.TargetOptions{Addr: ts.Addr, Label: ts.Label, Initial: initial, Conn: m.conn})
	})
	for _, t := range removed {
		if rc, ok := p.checkers[t]; ok {
			rc.cancel()
			delete(p.checkers, t)
		}
	}
	m.startCheckers(p)
	p.changed.Broadcast()
	return removed
}

// startCheckers starts a checker for every target of p that has none, once
// the Manager is started.
func (m *Manager) startCheckers(p *pool) {
	if m.runCtx == nil || m.closed {
		return
	}
	for _, t := range p.up.Targets() {
		if _, ok := p.checkers[t]; ok {
			continue
		}
		c := health.NewChecker(health.CheckerOptions{
			Target:   t,
			Prober:   m.prober,
			Settings: p.svc.settings,
			Notify:   p.changed.Broadcast,
			OnProbe: func(err error) {
				m.metrics.Probed(p.svc.name, p.up.Name(), t.Addr(), err)
			},
			Logger: m.log,
			Attrs:  []slog.Attr{slog.String("service", p.svc.name), slog.String("pool", p.up.Name())},
		})
		ctx, cancel := context.WithCancel(m.runCtx)
		p.checkers[t] = &runningChecker{c: c, cancel: cancel}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			c.Run(ctx)
		}()
	}
}

func (m *Manager) stopCheckers(p *pool) {
	for t, rc := range p.checkers {
		rc.cancel()
		delete(p.checkers, t)
	}
}

// retireTargets lets the requests running on targets that left their pool
// finish, up to the service's drain timeout, then closes their connections
// for good. Long-lived connections on them are told goodbye over the end of
// the drain (drain_close_spread), as a deploy's drain does.
// Requests counted on one of pools (pools that left their service) are
// waited for too, as they may not have picked their target yet. It does
// not block.
func (m *Manager) retireTargets(ts []*upstream.Target, sc *config.Service, pools ...*upstream.Pool) {
	if len(ts) == 0 {
		return
	}
	base := m.runCtx
	if base == nil {
		base = context.Background()
	}
	busy := func() bool {
		for _, p := range pools {
			if p.InFlight() > 0 {
				return true
			}
		}
		for _, t := range ts {
			if t.InFlight() > 0 {
				return true
			}
		}
		return false
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(base, sc.DrainTimeout)
		defer cancel()
		deadline, _ := ctx.Deadline()
		bye := upstream.SayGoodbye(ts, deadline, sc.CloseSpread())
		tick := time.NewTicker(retirePoll)
		defer tick.Stop()
	wait:
		for busy() {
			select {
			case <-ctx.Done():
				break wait
			case <-tick.C:
			}
		}
		bye.Stop()
		for _, t := range ts {
			if n := t.InFlight(); n > 0 {
				m.log.Warn("removed target still had requests at the drain timeout; closing them",
					"target", t.Label(), "in_flight", n)
			}
			t.Retire()
		}
	}()
}

// Router is what the data plane routes with.
func (m *Manager) Router() *route.Router { return m.router }

// Start begins health checks on every pool that has targets. They run
// until ctx ends or Close is called.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("control plane is closed")
	}
	if m.runCtx != nil {
		return errors.New("control plane already started")
	}
	m.runCtx, m.stop = context.WithCancel(ctx)
	for _, s := range m.services {
		for _, p := range s.pools {
			m.startCheckers(p)
		}
		m.armStopsLocked(s)
	}
	if m.shared != nil {
		runCtx := m.runCtx
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.shared.Follow(runCtx, m)
		}()
	}
	return nil
}

// SayGoodbye tells the long-lived connections (WebSockets, event streams)
// on every pool of every service goodbye, each service's spread over its
// last drain_close_spread before end (upstream.SayGoodbye): how a process
// that handed its listeners to another lets them go, so their clients
// reconnect, to the new process, a few at a time. stop ends it.
func (m *Manager) SayGoodbye(end time.Time) (stop func()) {
	m.mu.Lock()
	var byes []*upstream.Farewell
	for _, s := range m.services {
		var ts []*upstream.Target
		for _, p := range s.pools {
			ts = append(ts, p.up.Targets()...)
		}
		byes = append(byes, upstream.SayGoodbye(ts, end, s.cfg.Load().CloseSpread()))
	}
	m.mu.Unlock()
	return func() {
		for _, b := range byes {
			b.Stop()
		}
	}
}

// Close stops the health checks and waits for them and for pending
// retirements (which close their connections at once). A running trial
// (canary, guard) stops where it is without touching the routing, records
// its end and lets go of its deploy lock; Close waits for that too.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	close(m.closing)
	for _, s := range m.services {
		m.armStopsLocked(s) // closed: only stops the timer
	}
	if m.stop != nil {
		m.stop()
	}
	m.mu.Unlock()
	m.wg.Wait()
	m.prober.Close()
}

// Config returns the configuration in use.
func (m *Manager) Config() *config.Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

// serviceLocked finds a service by name; an empty name means the only one.
func (m *Manager) serviceLocked(name string) (*service, error) {
	if name == "" {
		if len(m.services) == 1 {
			return m.services[0], nil
		}
		return nil, errorf(admin.KindInvalid, "cutover serves %d services (%s): name one with -s SERVICE", len(m.services), strings.Join(m.serviceNames(), ", "))
	}
	for _, s := range m.services {
		if s.name == name {
			return s, nil
		}
	}
	return nil, errorf(admin.KindNotFound, "no service %q — the services are: %s", name, strings.Join(m.serviceNames(), ", "))
}

func (m *Manager) serviceNames() []string {
	names := make([]string, len(m.services))
	for i, s := range m.services {
		names[i] = s.name
	}
	return names
}

func poolNames(s *service) []string {
	var names []string
	for _, p := range s.poolList() {
		names = append(names, p.up.Name())
	}
	return names
}

// SetTargets replaces the targets of a pool, e.g. from the Docker provider
// as containers come and go. Targets whose address stays keep their
// verdict and connections; new ones start Unknown and take traffic once
// their health checks pass; removed ones finish their requests (up to the
// service's drain timeout) and are then closed. It is not persisted: the
// provider recomputes it after a restart.
func (m *Manager) SetTargets(service, poolName string, specs []upstream.TargetSpec) error {
	if err := checkSpecs(specs); err != nil {
		return err
	}
	m.mu.Lock()
	s, err := m.serviceLocked(service)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	p, ok := s.pools[poolName]
	if !ok {
		m.mu.Unlock()
		return errorf(admin.KindNotFound, "service %q has no pool %q — the pools are: %s", s.name, poolName, strings.Join(poolNames(s), ", "))
	}
	removed := m.setPoolTargets(p, specs, upstream.Unknown)
	m.retireTargets(removed, s.cfg.Load())
	m.mu.Unlock()
	return nil
}

func checkSpecs(specs []upstream.TargetSpec) error { return rules.CheckTargets(specs) }

// Status reports every service, or the named one.
func (m *Manager) Status(name string) ([]admin.ServiceStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := m.services
	if name != "" {
		s, err := m.serviceLocked(name)
		if err != nil {
			return nil, err
		}
		list = []*service{s}
	}
	out := make([]admin.ServiceStatus, 0, len(list))
	for _, s := range list {
		out = append(out, m.serviceStatusLocked(s))
	}
	return out, nil
}

func (m *Manager) serviceStatusLocked(s *service) admin.ServiceStatus {
	sc := s.cfg.Load()
	d := s.desired
	ss := admin.ServiceStatus{
		Name:         s.name,
		Hosts:        append([]string{}, sc.Hosts...),
		PreviewHosts: append([]string{}, sc.PreviewHosts...),
		Active:       d.Active,
		Previous:     d.Previous,
		Preview:      d.Preview,
		Revision:     d.Revision,
		Balance:      sc.Balance,
		Pools:        []admin.PoolStatus{},
	}
	if d.Canary != "" {
		ss.Canary, ss.CanaryPercent = d.Canary, pct(d.Weight)
	}
	if t := s.trial; t != nil {
		ss.Guard = t.guardReport()
	}
	if op := m.ops[s.name]; op != nil {
		cp := *op
		if prev := s.pools[ss.Previous]; cp.Phase == admin.PhaseDrain && prev != nil {
			cp.DrainLeft = prev.up.InFlight()
		}
		ss.Operation = &cp
	}
	for _, p := range s.poolList() {
		up := p.up
		ps := admin.PoolStatus{
			Name: up.Name(), Active: up.Name() == d.Active, Preview: up.Name() == d.Preview, Source: p.source(),
			InFlight: up.InFlight(), Served: up.Served(), Targets: []admin.TargetStatus{},
		}
		if at, ok := d.StopAt[up.Name()]; ok {
			ps.StopsAt = &at
		}
		if m.stats != nil {
			ps.RequestStats = requestStats(m.stats.Pool(s.name, up.Name()))
		}
		for _, t := range up.Targets() {
			ts := targetStatus(t)
			if m.stats != nil {
				ts.RequestStats = requestStats(m.stats.Target(s.name, up.Name(), t.Addr()))
			}
			ps.Targets = append(ps.Targets, ts)
		}
		ss.Pools = append(ss.Pools, ps)
	}
	return ss
}

// StatsWindow is the span status reports requests per second, error rate
// and latency over.
const StatsWindow = 10 * time.Second

// requestStats summarises a series over the last StatsWindow.
func requestStats(ser *stats.Series) *admin.RequestStats {
	sum := ser.Last(StatsWindow)
	return &admin.RequestStats{
		RPS:       sum.RPS(),
		ErrorRate: sum.ErrorRate(),
		P50MS:     float64(sum.P50) / float64(time.Millisecond),
		P99MS:     float64(sum.P99) / float64(time.Millisecond),
	}
}

func targetStatus(t *upstream.Target) admin.TargetStatus {
	st := t.Status()
	ts := admin.TargetStatus{
		Addr: st.Addr, Label: st.Label, State: st.State, Since: st.Since,
		ConsecutivePasses: t.ConsecutivePasses(), LastError: st.LastError,
		InFlight: st.InFlight, Served: st.Served, Failures: st.Failures,
	}
	if !st.LastProbe.IsZero() {
		lp := st.LastProbe
		ts.LastProbe = &lp
	}
	return ts
}

// change is the one way a service's desired state changes: next computes
// the next value from the current one (or refuses with an error, changing
// nothing), the value is committed to the store against the revision it
// was computed from, and only once it is stored does install (may be nil)
// change the registry and the routing swap in one atomic step, with m.mu
// held. When the store refuses (unwritable, or another writer committed
// first) nothing is applied. It returns the desired state it replaced and
// what the swap did (the pools that no longer get requests, for the caller
// to drain, and when it happened).
//
// Changes are serialised, so each one starts from the value the previous
// one applied.
func (m *Manager) change(ctx context.Context, s *service, next func(cur state.Service) (state.Service, error), install func()) (prev state.Service, ap applied, err error) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.mu.Lock()
	cur := s.desired.Clone()
	m.mu.Unlock()
	nx, err := next(cur.Clone())
	if err != nil {
		return cur, applied{}, err
	}
	// A pool that takes requests again must not be stopped under them.
	nx.DropRouted()
	rev, err := m.commit(ctx, []state.Change{{Service: s.name, Value: &nx, Revision: cur.Revision}})
	if err != nil {
		return cur, applied{}, err
	}
	nx.Revision = rev
	m.mu.Lock()
	defer m.mu.Unlock()
	if install != nil {
		install()
	}
	return cur, m.applyLocked(s, nx), nil
}

// commit writes changes to the store, keeping stateProblem up to date.
func (m *Manager) commit(ctx context.Context, changes []state.Change) (int64, error) {
	rev, err := m.store.Commit(ctx, changes)
	if err != nil {
		if !errors.Is(err, state.ErrConflict) {
			m.setStateProblem(err)
		}
		return 0, err
	}
	if m.stateProblem.Swap(nil) != nil {
		m.log.Info("state written again; changes are accepted", "state", m.store.Where())
	}
	return rev, nil
}

// checkWritable refuses a change early, before a health wait, when the
// state cannot be written (the write at the switch checks again).
func (m *Manager) checkWritable() error {
	if err := m.store.Check(context.Background()); err != nil {
		m.setStateProblem(err)
		return err
	}
	return nil
}

func (m *Manager) setStateProblem(err error) {
	if m.shared != nil {
		return // the shared store tracks its reachability itself (StateProblem)
	}
	msg := fmt.Sprintf("%v — cutover keeps serving the last state it read, and refuses deploys, rollbacks and reloads until the state can be written (fix state_dir: free space, permissions, read-only mount)", err)
	if old := m.stateProblem.Swap(&msg); old == nil || *old != msg {
		m.log.Error("state cannot be written", "state_file", m.statePath, "error", err)
	}
}

// StateProblem says why the state cannot be written ("" when it can).
func (m *Manager) StateProblem() string {
	if m.shared != nil {
		if p := m.shared.Problem(); p != "" {
			return p + " — this instance is stale: it keeps serving the last state it applied and refuses deploys, rollbacks and reloads until etcd answers again (check the etcd members and the network to them)"
		}
	}
	if p := m.stateProblem.Load(); p != nil {
		return *p
	}
	return ""
}

// StatePath is the state file's path ("" when nothing is persisted).
func (m *Manager) StatePath() string { return m.statePath }

func specsOf(addrs []string) []upstream.TargetSpec {
	out := make([]upstream.TargetSpec, len(addrs))
	for i, a := range addrs {
		out[i] = upstream.TargetSpec{Addr: a}
	}
	return out
}

func fromState(ts []state.Target) []upstream.TargetSpec {
	out := make([]upstream.TargetSpec, len(ts))
	for i, t := range ts {
		out[i] = upstream.TargetSpec{Addr: t.Addr, Label: t.Label}
	}
	return out
}

// signal is a broadcast without lost wake-ups: take Wait's channel, look
// at the state, then block on the channel; a Broadcast after Wait closes it.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// Wait returns a channel closed by the next Broadcast.
func (s *signal) Wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Broadcast wakes every waiter.
func (s *signal) Broadcast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
