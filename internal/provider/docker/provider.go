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
	// Config gives docker.host, docker.network and the pools to follow.
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
// engine. Create it with Start; stop it with Close.
type Provider struct {
	eng    *Engine
	sink   Sink
	log    *slog.Logger
	resync time.Duration

	mu  sync.Mutex
	cfg *config.Config
	net Network
	// stopping holds containers sent their stop signal that still run.
	stopping map[string]bool
	// pushed is the fingerprint of the targets last given to the sink,
	// per pool; reported the problems last logged.
	pushed   map[string]string
	reported map[string]string
	lastErr  string
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

// Needed reports whether the configuration has pools from Docker.
func Needed(cfg *config.Config) bool { return len(Pools(cfg)) > 0 }

// Start connects to the engine, checks docker.network, resolves every
// Docker pool once and gives the sink their targets, then follows the
// engine's events until Close. It fails when the engine does not answer or
// the network does not exist; missing containers are logged, not fatal
// (an idle colour is often not started yet).
func Start(ctx context.Context, o Options) (*Provider, error) {
	p := &Provider{
		sink:     o.Sink,
		log:      o.Logger,
		resync:   o.Resync,
		cfg:      o.Config,
		stopping: map[string]bool{},
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
	var err error
	if p.eng, err = Connect(ctx, o.Config.Docker.Host); err != nil {
		return nil, fmt.Errorf("docker pools: %w", err)
	}
	nctx, cancel := context.WithTimeout(ctx, callTimeout)
	p.net, err = p.eng.Network(nctx, o.Config.Docker.Network)
	cancel()
	if err != nil {
		p.eng.Close()
		return nil, fmt.Errorf("docker.network: %w", err)
	}
	if _, err := p.sync(ctx); err != nil {
		p.eng.Close()
		return nil, fmt.Errorf("docker pools: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	p.done.Add(2)
	go func() { defer p.done.Done(); p.follow(rctx) }()
	go func() { defer p.done.Done(); p.syncLoop(rctx) }()
	p.log.Info("following Docker containers", "engine", p.eng.Host(), "network", p.net.Name, "pools", len(Pools(o.Config)))
	return p, nil
}

// SetConfig applies a reloaded configuration: pools are resolved again
// at once. A changed docker.network is used when it exists (else the old
// one stays, with an error logged); a changed docker.host applies at the
// next start.
func (p *Provider) SetConfig(ctx context.Context, cfg *config.Config) {
	if p == nil {
		return
	}
	p.mu.Lock()
	old := p.cfg
	p.mu.Unlock()
	var n *Network
	if cfg.Docker.Network != old.Docker.Network {
		nctx, cancel := context.WithTimeout(ctx, callTimeout)
		got, err := p.eng.Network(nctx, cfg.Docker.Network)
		cancel()
		if err != nil {
			p.log.Error("docker.network not changed; the pools stay on the old network", "network", old.Docker.Network, "err", err)
		} else {
			n = &got
		}
	}
	if cfg.Docker.Host != old.Docker.Host {
		p.log.Warn("docker.host changed in the configuration; it applies at the next start", "running", p.eng.Host(), "new", cfg.Docker.Host)
	}
	p.mu.Lock()
	p.cfg = cfg
	if n != nil {
		p.net = *n
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
	p.eng.Close()
}

// StopPool stops the running containers of a pool of the configuration
// (all at once, each with its own stop timeout) and returns their names,
// sorted: the scheduled stop of an old colour (cutover release --keep-old).
// The pool loses them as their stop events arrive.
func (p *Provider) StopPool(ctx context.Context, service, pool string) ([]string, error) {
	p.mu.Lock()
	refs := Pools(p.cfg)
	p.mu.Unlock()
	i := slices.IndexFunc(refs, func(r PoolRef) bool { return r.Service == service && r.Pool == pool })
	if i < 0 {
		return nil, fmt.Errorf("pool %s of service %s does not follow Docker containers in the configuration", pool, service)
	}
	containers, err := p.eng.List(ctx, filters.NewArgs())
	if err != nil {
		return nil, err
	}
	members, _ := Members(refs[i], containers)
	var running []Container
	for _, c := range members {
		if c.Running() {
			running = append(running, c)
		}
	}
	errs := make([]error, len(running))
	var wg sync.WaitGroup
	for j, c := range running {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[j] = p.eng.Stop(ctx, c.ID, nil)
		}()
	}
	wg.Wait()
	var names []string
	for j, c := range running {
		if errs[j] == nil {
			names = append(names, c.Name)
		}
	}
	sort.Strings(names)
	return names, errors.Join(errs...)
}

// Network is the network addresses are taken on.
func (p *Provider) Network() Network {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.net
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

// sync resolves every Docker pool from one snapshot of the engine and
// gives the sink the pools whose targets changed. On an engine error the
// pools keep their targets. pending says a pool should be resolved again
// soon.
func (p *Provider) sync(ctx context.Context) (pending bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	containers, err := p.eng.List(cctx, filters.NewArgs())
	if err != nil {
		return false, err
	}
	p.mu.Lock()
	running := map[string]bool{}
	for _, c := range containers {
		if c.Running() {
			running[c.ID] = true
		}
	}
	for id := range p.stopping {
		if !running[id] {
			delete(p.stopping, id)
		}
	}
	stopping := make(map[string]bool, len(p.stopping))
	for id := range p.stopping {
		stopping[id] = true
	}
	refs, n, gen := Pools(p.cfg), p.net, p.gen
	if p.lastErr != "" {
		p.log.Info("docker pools are updated again", "engine", p.eng.Host())
		p.lastErr = ""
	}
	p.mu.Unlock()

	for _, ref := range refs {
		res := Resolve(ref, containers, n, stopping)
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
func (p *Provider) follow(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		ectx, cancel := context.WithCancel(ctx)
		msgs, errs := p.eng.cli.Events(ectx, events.ListOptions{Filters: eventFilter()})
		p.requestSync()
		err := p.read(ctx, msgs, errs, &backoff)
		cancel()
		if ctx.Err() != nil {
			return
		}
		p.log.Warn("Docker event stream ended; reconnecting", "engine", p.eng.Host(), "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func (p *Provider) read(ctx context.Context, msgs <-chan events.Message, errs <-chan error, backoff *time.Duration) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case m := <-msgs:
			*backoff = minBackoff
			p.handle(m)
		}
	}
}

// handle notes what an event says about a container and asks for a
// resolution at once.
func (p *Provider) handle(m events.Message) {
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
		p.stopping[id] = true
	case m.Action == events.ActionStart || m.Action == events.ActionDestroy:
		delete(p.stopping, id)
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
