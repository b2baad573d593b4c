package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// Sink receives the targets of each pool; the control plane's Manager is
// one. New addresses start unknown and take traffic once health checks
// pass; removed ones are drained, then closed.
type Sink interface {
	SetTargets(service, pool string, specs []upstream.TargetSpec) error
}

// Options configure a Provider.
type Options struct {
	// Config gives docker.host or docker.hosts, docker.network and the
	// pools to follow.
	Config *config.Config
	Sink   Sink
	// Logger receives pool changes and problems (default: discard).
	Logger *slog.Logger
	// Resync is how often every pool is resolved again besides events, in
	// case an event was missed (default 30s).
	Resync time.Duration
}

const (
	defaultResync = 30 * time.Second
	// callTimeout bounds one resolution's calls to the engine.
	callTimeout = 10 * time.Second
	// Reconnection to the event stream backs off between these.
	minBackoff = 200 * time.Millisecond
	maxBackoff = 5 * time.Second
	// settleDelay is the wait before each follow-up resolution after an
	// event.
	settleDelay  = 250 * time.Millisecond
	settleChecks = 2
)

// Provider keeps the Docker pools of a configuration in step with the
// engines (docker.host, or each of docker.hosts): a pool's members are
// the union of what every engine that answers has for it. Create it with
// Start; stop it with Close.
type Provider struct {
	// engines are in configuration order, which decides the engine a
	// target is labelled with when two report the same address.
	engines []*engine
	sink    Sink
	log     *slog.Logger
	resync  time.Duration

	mu  sync.Mutex
	cfg *config.Config
	// pushed is the fingerprint of the targets last given to the sink,
	// per pool; reported the problems last logged.
	pushed   map[string]string
	reported map[string]string
	// lastErr is the error of the last resolution that no engine answered.
	lastErr string
	// settle counts the follow-up resolutions still due after an event:
	// the engine's container list can lag its events by a few
	// milliseconds (a network connect is announced before the list shows
	// the address), so each event is followed by a check shortly after.
	settle int
	// gen counts configurations, so that a resolution that began before a
	// reload does not mark the reloaded pools as pushed.
	gen int

	kick   chan struct{}
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// engine is one followed engine; its fields other than eng are guarded by
// the Provider's mu.
type engine struct {
	eng *Engine
	// net is docker.network as this engine knows it; its ID is "" until
	// the engine answered a lookup.
	net Network
	// stopping holds containers sent their stop signal that still run.
	stopping map[string]bool
	// lastErr is this engine's last error, logged once.
	lastErr string
}

// snapshot is one engine's containers at a resolution.
type snapshot struct {
	e          *engine
	containers []Container
	net        Network
	stopping   map[string]bool
	err        error
}

// Needed reports whether the configuration has pools from Docker.
func Needed(cfg *config.Config) bool { return len(Pools(cfg)) > 0 }

// Start connects to the engines, checks docker.network, resolves every
// Docker pool once and gives the sink their targets, then follows each
// engine's events until Close. It fails when no engine answers or the
// network does not exist on one that does; an engine of several that does
// not answer is logged and its containers are left out until it does;
// missing containers are logged, not fatal (an idle colour is often not
// started yet).
func Start(ctx context.Context, o Options) (*Provider, error) {
	p := &Provider{
		sink:     o.Sink,
		log:      o.Logger,
		resync:   o.Resync,
		cfg:      o.Config,
		pushed:   map[string]string{},
		reported: map[string]string{},
		kick:     make(chan struct{}, 1),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.resync <= 0 {
		p.resync = defaultResync
	}
	if err := p.connect(ctx, o.Config.Docker); err != nil {
		p.closeEngines()
		return nil, err
	}
	if _, err := p.sync(ctx); err != nil {
		p.closeEngines()
		return nil, fmt.Errorf("docker pools: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	p.done.Add(1 + len(p.engines))
	for _, e := range p.engines {
		go func() { defer p.done.Done(); p.follow(rctx, e) }()
	}
	go func() { defer p.done.Done(); p.syncLoop(rctx) }()
	p.log.Info("following Docker containers", "engines", p.hosts(), "network", o.Config.Docker.Network, "pools", len(Pools(o.Config)))
	return p, nil
}

// connect opens a client per engine and looks the network up on those
// that answer; at least one must.
func (p *Provider) connect(ctx context.Context, d config.Docker) error {
	for _, h := range d.Engines() {
		eng, err := open(h)
		if err != nil {
			return fmt.Errorf("docker pools: %w", err)
		}
		p.engines = append(p.engines, &engine{eng: eng, net: Network{Name: d.Network}, stopping: map[string]bool{}})
	}
	var down []error
	for _, e := range p.engines {
		if err := e.eng.Ping(ctx); err != nil {
			down = append(down, err)
			e.lastErr = err.Error()
			continue
		}
		nctx, cancel := context.WithTimeout(ctx, callTimeout)
		n, err := e.eng.Network(nctx, d.Network)
		cancel()
		if err != nil {
			if len(p.engines) > 1 {
				return fmt.Errorf("docker.network on the engine at %s: %w", e.eng.Host(), err)
			}
			return fmt.Errorf("docker.network: %w", err)
		}
		e.net = n
	}
	if len(down) == len(p.engines) {
		return fmt.Errorf("docker pools: %w", errors.Join(down...))
	}
	for _, err := range down {
		p.log.Error("Docker engine not answering; its containers are left out of the pools until it does", "err", err)
	}
	return nil
}

func (p *Provider) closeEngines() {
	for _, e := range p.engines {
		e.eng.Close()
	}
}

// hosts lists the engine addresses in use.
func (p *Provider) hosts() []string {
	out := make([]string, len(p.engines))
	for i, e := range p.engines {
		out[i] = e.eng.Host()
	}
	return out
}

// label names a target in status: the container, and with several
// engines the engine it was found on.
func (p *Provider) label(e *engine, name string) string {
	if len(p.engines) == 1 {
		return name
	}
	return name + "@" + e.eng.Host()
}

// SetConfig applies a reloaded configuration: pools are resolved again
// at once. A changed docker.network is used on each engine where it
// exists (else that engine stays on the old one, with an error logged; an
// engine that does not answer looks it up when it does); a changed
// docker.host or docker.hosts applies at the next start.
func (p *Provider) SetConfig(ctx context.Context, cfg *config.Config) {
	if p == nil {
		return
	}
	p.mu.Lock()
	old := p.cfg
	p.mu.Unlock()
	nets := make([]*Network, len(p.engines))
	if cfg.Docker.Network != old.Docker.Network {
		for i, e := range p.engines {
			nctx, cancel := context.WithTimeout(ctx, callTimeout)
			got, err := e.eng.Network(nctx, cfg.Docker.Network)
			cancel()
			var down *UnreachableError
			switch {
			case errors.As(err, &down):
				nets[i] = &Network{Name: cfg.Docker.Network}
			case err != nil:
				p.log.Error("docker.network not changed; the pools stay on the old network", "engine", e.eng.Host(), "network", old.Docker.Network, "err", err)
			default:
				nets[i] = &got
			}
		}
	}
	if !slices.Equal(cfg.Docker.Engines(), old.Docker.Engines()) {
		p.log.Warn("docker.host or docker.hosts changed in the configuration; it applies at the next start", "running", p.hosts(), "new", cfg.Docker.Engines())
	}
	p.mu.Lock()
	p.cfg = cfg
	for i, n := range nets {
		if n != nil {
			p.engines[i].net = *n
		}
	}
	// Pools the reload created have no targets yet: push everything.
	p.pushed = map[string]string{}
	p.gen++
	p.mu.Unlock()
	p.requestSync()
}

// Close stops following events and releases the engine connection. The
// pools keep the targets they have.
func (p *Provider) Close() {
	if p == nil {
		return
	}
	if p.cancel != nil {
		p.cancel()
	}
	p.done.Wait()
	p.closeEngines()
}

// StopPool stops the running containers of a pool of the configuration
// on every engine that answers (all at once, each with its own stop
// timeout) and returns their names, sorted: the scheduled stop of an old
// colour (cutover release --keep-old). The pool loses them as their stop
// events arrive. It fails only when no engine answers.
func (p *Provider) StopPool(ctx context.Context, service, pool string) ([]string, error) {
	p.mu.Lock()
	refs := Pools(p.cfg)
	p.mu.Unlock()
	i := slices.IndexFunc(refs, func(r PoolRef) bool { return r.Service == service && r.Pool == pool })
	if i < 0 {
		return nil, fmt.Errorf("pool %s of service %s does not follow Docker containers in the configuration", pool, service)
	}
	type stop struct {
		eng *Engine
		c   Container
	}
	var running []stop
	var down []error
	for _, e := range p.engines {
		containers, err := e.eng.List(ctx, filters.NewArgs())
		if err != nil {
			down = append(down, err)
			continue
		}
		members, _ := Members(refs[i], containers)
		for _, c := range members {
			if c.Running() {
				running = append(running, stop{e.eng, c})
			}
		}
	}
	if len(down) == len(p.engines) {
		return nil, errors.Join(down...)
	}
	for _, err := range down {
		p.log.Warn("containers of a Docker engine that does not answer are not stopped", "service", service, "pool", pool, "err", err)
	}
	errs := make([]error, len(running))
	var wg sync.WaitGroup
	for j, s := range running {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[j] = s.eng.Stop(ctx, s.c.ID, nil)
		}()
	}
	wg.Wait()
	var names []string
	for j, s := range running {
		if errs[j] == nil && !slices.Contains(names, s.c.Name) {
			names = append(names, s.c.Name)
		}
	}
	sort.Strings(names)
	return names, errors.Join(errs...)
}

// Network is the network addresses are taken on (as the first engine
// knows it).
func (p *Provider) Network() Network {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.engines[0].net
}

func (p *Provider) requestSync() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// syncLoop resolves the pools after each relevant event (events that
// arrive during a resolution cause one more) and every resync period.
func (p *Provider) syncLoop(ctx context.Context) {
	tick := time.NewTicker(p.resync)
	defer tick.Stop()
	// soon fires while a resolution is pending on a change no event
	// announces; it backs off while the change does not come.
	soon := time.NewTimer(time.Hour)
	soon.Stop()
	retry := minBackoff
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-tick.C:
		case <-soon.C:
		}
		pending, err := p.sync(ctx)
		p.mu.Lock()
		settle := p.settle > 0
		if settle {
			p.settle--
		}
		p.mu.Unlock()
		switch {
		case pending:
			soon.Reset(retry)
			retry = min(retry*2, maxBackoff)
		case settle:
			soon.Reset(settleDelay)
			retry = minBackoff
		default:
			retry = minBackoff
		}
		if err != nil && ctx.Err() == nil {
			p.mu.Lock()
			repeated := err.Error() == p.lastErr
			p.lastErr = err.Error()
			p.mu.Unlock()
			if !repeated {
				p.log.Error("docker pools not updated; they keep their targets", "err", err)
			}
		}
	}
}

// sync resolves every Docker pool from one snapshot of each engine and
// gives the sink the pools whose targets changed. An engine that does not
// answer is left out (its containers leave the pools); when none answers
// the pools keep their targets and the error is returned. pending says a
// pool should be resolved again soon.
func (p *Provider) sync(ctx context.Context) (pending bool, err error) {
	snaps := p.snapshots(ctx)
	if ctx.Err() != nil {
		// Closing: the engines did not fail.
		return false, ctx.Err()
	}
	var live []snapshot
	var down []error
	p.mu.Lock()
	for _, s := range snaps {
		if s.err != nil {
			down = append(down, s.err)
			if len(snaps) > 1 && s.err.Error() != s.e.lastErr {
				p.log.Error("Docker engine not answering; its containers are left out of the pools until it does", "engine", s.e.eng.Host(), "err", s.err)
			}
			s.e.lastErr = s.err.Error()
			continue
		}
		if s.e.lastErr != "" && len(snaps) > 1 {
			p.log.Info("Docker engine answers again; its containers are back in the pools", "engine", s.e.eng.Host())
		}
		s.e.lastErr = ""
		live = append(live, s)
	}
	if len(live) == 0 {
		p.mu.Unlock()
		return false, errors.Join(down...)
	}
	refs, gen := Pools(p.cfg), p.gen
	if p.lastErr != "" {
		p.log.Info("docker pools are updated again", "engines", p.hosts())
		p.lastErr = ""
	}
	p.mu.Unlock()

	for _, ref := range refs {
		res := p.resolve(ref, live)
		pending = pending || res.Pending
		p.report(ref, res)
		fp := fingerprint(res.Targets)
		p.mu.Lock()
		same := p.pushed[ref.Key()] == fp
		_, known := p.pushed[ref.Key()]
		p.mu.Unlock()
		if same && known {
			continue
		}
		if err := p.sink.SetTargets(ref.Service, ref.Pool, res.Targets); err != nil {
			// The control plane may not have the pool yet (a reload in
			// progress); the next resolution tries again.
			p.log.Warn("docker pool not updated", "service", ref.Service, "pool", ref.Pool, "err", err)
			continue
		}
		p.mu.Lock()
		if p.gen == gen {
			p.pushed[ref.Key()] = fp
		}
		p.mu.Unlock()
		p.log.Info("docker pool members", "service", ref.Service, "pool", ref.Pool,
			"targets", describeTargets(res.Targets), "waiting", strings.Join(res.Waiting, ", "))
	}
	return pending, nil
}

// snapshots lists every engine's containers at once (an engine that
// hangs delays the others by at most callTimeout), looking docker.network
// up first on an engine that did not answer before.
func (p *Provider) snapshots(ctx context.Context) []snapshot {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	snaps := make([]snapshot, len(p.engines))
	var wg sync.WaitGroup
	for i, e := range p.engines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.mu.Lock()
			n := e.net
			p.mu.Unlock()
			s := snapshot{e: e, net: n}
			if n.ID == "" {
				got, err := e.eng.Network(cctx, n.Name)
				if err != nil {
					s.err = err
					snaps[i] = s
					return
				}
				s.net = got
				p.mu.Lock()
				if e.net.Name == got.Name {
					e.net = got
				}
				p.mu.Unlock()
			}
			s.containers, s.err = e.eng.List(cctx, filters.NewArgs())
			snaps[i] = s
		}()
	}
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, s := range snaps {
		if s.err != nil {
			continue
		}
		running := map[string]bool{}
		for _, c := range s.containers {
			if c.Running() {
				running[c.ID] = true
			}
		}
		stopping := map[string]bool{}
		for id := range s.e.stopping {
			if !running[id] {
				delete(s.e.stopping, id)
				continue
			}
			stopping[id] = true
		}
		snaps[i].stopping = stopping
	}
	return snaps
}

// resolve unites what each engine has for a pool: an address two engines
// report is one target, labelled with the first engine's container; a
// named container is missing only when no engine has it.
func (p *Provider) resolve(ref PoolRef, live []snapshot) Resolution {
	var out Resolution
	seen := map[string]bool{}
	absent := map[string]int{}
	noneRunning := true
	for _, s := range live {
		r := resolveOn(ref, s.containers, s.net, s.stopping)
		for _, t := range r.Targets {
			if seen[t.Addr] {
				continue
			}
			seen[t.Addr] = true
			t.Label = p.label(s.e, t.Label)
			out.Targets = append(out.Targets, t)
		}
		for _, msg := range r.Problems {
			if len(p.engines) > 1 {
				msg = "on the engine at " + s.e.eng.Host() + ", " + msg
			}
			out.Problems = append(out.Problems, msg)
		}
		for _, w := range r.Waiting {
			if len(p.engines) > 1 {
				w += " on " + s.e.eng.Host()
			}
			out.Waiting = append(out.Waiting, w)
		}
		out.Pending = out.Pending || r.Pending
		for _, name := range r.missing {
			absent[name]++
		}
		noneRunning = noneRunning && r.noneRunning
	}
	var missing []string
	for _, name := range ref.Containers {
		if absent[name] == len(live) && !slices.Contains(missing, name) {
			missing = append(missing, name)
		}
	}
	out.Problems = append(presenceProblems(ref, missing, noneRunning), out.Problems...)
	sort.Slice(out.Targets, func(i, j int) bool { return out.Targets[i].Label < out.Targets[j].Label })
	return out
}

// report logs a pool's problems when they change.
func (p *Provider) report(ref PoolRef, res Resolution) {
	text := strings.Join(res.Problems, "\n")
	p.mu.Lock()
	prev, seen := p.reported[ref.Key()]
	p.reported[ref.Key()] = text
	p.mu.Unlock()
	if seen && prev == text {
		return
	}
	for _, msg := range res.Problems {
		p.log.Warn("docker pool problem", "service", ref.Service, "pool", ref.Pool, "problem", msg)
	}
	if text == "" && seen && prev != "" {
		p.log.Info("docker pool problems resolved", "service", ref.Service, "pool", ref.Pool)
	}
}

func describeTargets(ts []upstream.TargetSpec) string {
	if len(ts) == 0 {
		return "none"
	}
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.Label + "=" + t.Addr
	}
	return strings.Join(parts, ", ")
}

// eventFilter selects the events that can change a pool.
func eventFilter() filters.Args {
	f := filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("type", string(events.NetworkEventType)),
	)
	for _, a := range []events.Action{
		events.ActionStart, events.ActionDie, events.ActionStop, events.ActionKill,
		events.ActionHealthStatus, events.ActionDestroy, events.ActionPause, events.ActionUnPause,
		events.ActionRename, events.ActionRestart, events.ActionConnect, events.ActionDisconnect,
	} {
		f.Add("event", string(a))
	}
	return f
}

// follow reads the engine's event stream, reconnecting with back-off when
// it breaks; after each (re)connection the pools are resolved again, as
// events may have been missed.
func (p *Provider) follow(ctx context.Context, e *engine) {
	backoff := minBackoff
	for ctx.Err() == nil {
		ectx, cancel := context.WithCancel(ctx)
		msgs, errs := e.eng.cli.Events(ectx, events.ListOptions{Filters: eventFilter()})
		p.requestSync()
		err := p.read(ctx, e, msgs, errs, &backoff)
		cancel()
		if ctx.Err() != nil {
			return
		}
		p.log.Warn("Docker event stream ended; reconnecting", "engine", e.eng.Host(), "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func (p *Provider) read(ctx context.Context, e *engine, msgs <-chan events.Message, errs <-chan error, backoff *time.Duration) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case m := <-msgs:
			*backoff = minBackoff
			p.handle(e, m)
		}
	}
}

// handle notes what an event says about a container and asks for a
// resolution at once.
func (p *Provider) handle(e *engine, m events.Message) {
	p.mu.Lock()
	p.settle = settleChecks
	if m.Type == events.NetworkEventType {
		p.mu.Unlock()
		p.requestSync()
		return
	}
	id := m.Actor.ID
	switch {
	case m.Action == events.ActionKill && stopSignal(m.Actor.Attributes["signal"]):
		// The process got its stop signal and may still serve for a
		// while: it leaves its pool now, before it exits.
		e.stopping[id] = true
	case m.Action == events.ActionStart || m.Action == events.ActionDestroy:
		delete(e.stopping, id)
	}
	p.mu.Unlock()
	p.requestSync()
}

// stopSignal reports whether a kill event's signal ends the process: any
// but those used to reload, reopen logs or pause. Engines report numbers
// ("15"); names are accepted too.
func stopSignal(sig string) bool {
	sig = strings.TrimPrefix(strings.ToUpper(sig), "SIG")
	if n, err := strconv.Atoi(sig); err == nil {
		switch n {
		case 1, 10, 12, 17, 18, 19, 20, 28: // HUP USR1 USR2 CHLD CONT STOP TSTP WINCH
			return false
		}
		return true
	}
	switch sig {
	case "HUP", "USR1", "USR2", "CHLD", "CONT", "STOP", "TSTP", "WINCH":
		return false
	}
	return true
}
