package upstream

import (
	"context"
	"sync"
	"sync/atomic"
)

// Pool is one colour of a service: a set of targets and the count of
// requests dispatched to it and not yet finished.
type Pool struct {
	name    string
	balance atomic.Uint32
	targets atomic.Pointer[[]*Target]
	cursor  atomic.Uint32

	inflight atomic.Int64
	served   atomic.Uint64
	draining atomic.Bool
	// idle receives a value when a draining pool's last request ends.
	idle chan struct{}

	// mu serialises target set changes; readers use the atomic pointer.
	mu sync.Mutex
	// ejectMu serialises ejections, which are bounded by the pool's size.
	ejectMu sync.Mutex
}

// NewPool returns an empty pool.
func NewPool(name string, b Balance) *Pool {
	p := &Pool{name: name, idle: make(chan struct{}, 1)}
	p.balance.Store(uint32(b))
	empty := []*Target{}
	p.targets.Store(&empty)
	return p
}

// Name is the pool's name ("blue", "green", ...).
func (p *Pool) Name() string { return p.name }

// SetBalance changes the policy (on reload).
func (p *Pool) SetBalance(b Balance) { p.balance.Store(uint32(b)) }

// Balance returns the policy.
func (p *Pool) Balance() Balance { return Balance(p.balance.Load()) }

// Targets returns the current targets. The slice must not be modified.
func (p *Pool) Targets() []*Target { return *p.targets.Load() }

// SetTargets replaces the pool's targets. Targets whose address stays are
// kept (with their verdicts, counters and connections); new addresses get
// targets made by newTarget. The targets that left are returned, still
// open: the caller drains them (in-flight requests finish) and retires them.
func (p *Pool) SetTargets(addrs []TargetSpec, newTarget func(TargetSpec) *Target) (removed []*Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.Targets()
	byAddr := make(map[string]*Target, len(old))
	for _, t := range old {
		byAddr[t.addr] = t
	}
	next := make([]*Target, 0, len(addrs))
	for _, a := range addrs {
		if t, ok := byAddr[a.Addr]; ok {
			if a.Label != "" && a.Label != t.Label() {
				label := a.Label
				t.label.Store(&label)
			}
			next = append(next, t)
			delete(byAddr, a.Addr)
			continue
		}
		t := newTarget(a)
		t.pool.Store(p)
		next = append(next, t)
	}
	for _, t := range old {
		if _, gone := byAddr[t.addr]; gone {
			removed = append(removed, t)
		}
	}
	p.targets.Store(&next)
	return removed
}

// TargetSpec names a target to have in a pool.
type TargetSpec struct {
	Addr  string
	Label string
}

// Pick chooses a target for a request by the pool's policy, skipping
// those in tried (targets this request already failed on). It prefers
// healthy targets (Up and not ejected), then Up ones even if ejected; when
// none is Up, it tries the others rather than fail without trying, as nginx
// does when every server of an upstream is marked failed. It returns nil
// when every target was tried.
func (p *Pool) Pick(tried []*Target) *Target {
	ts := *p.targets.Load()
	if len(ts) == 0 {
		return nil
	}
	turn := p.cursor.Add(1)
	pol := p.Balance().policy()
	f := filter{tried: tried, now: nanotime()}
	for f.level = onlyHealthy; f.level <= anyTarget; f.level++ {
		if t := pol.pick(ts, turn, f); t != nil {
			return t
		}
	}
	return nil
}

// HasOther reports whether a healthy target other than t and those in
// tried exists: somewhere a request waiting on t could go instead.
func (p *Pool) HasOther(tried []*Target, t *Target) bool {
	now := nanotime()
	for _, o := range *p.targets.Load() {
		if o != t && o.healthyAt(now) && !contains(tried, o) {
			return true
		}
	}
	return false
}

func contains(ts []*Target, t *Target) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// Begin counts a request dispatched to the pool; End counts it finished.
func (p *Pool) Begin() { p.inflight.Add(1) }

// End finishes a request begun with Begin.
func (p *Pool) End() {
	p.served.Add(1)
	if p.inflight.Add(-1) == 0 && p.draining.Load() {
		select {
		case p.idle <- struct{}{}:
		default:
		}
	}
}

// Abort undoes a Begin for a request that was then dispatched elsewhere.
func (p *Pool) Abort() {
	p.served.Add(^uint64(0))
	p.End()
}

// InFlight is the number of requests dispatched to the pool and not yet
// finished.
func (p *Pool) InFlight() int64 { return p.inflight.Load() }

// Served is the number of requests the pool finished.
func (p *Pool) Served() uint64 { return p.served.Load() }

// Drain waits until no request is in flight on the pool, or ctx ends. It
// returns the number still in flight (0 when drained).
func (p *Pool) Drain(ctx context.Context) int64 {
	p.draining.Store(true)
	defer p.draining.Store(false)
	for {
		n := p.inflight.Load()
		if n <= 0 {
			return 0
		}
		select {
		case <-p.idle:
		case <-ctx.Done():
			return p.inflight.Load()
		}
	}
}

// CloseIdle closes idle connections of every target.
func (p *Pool) CloseIdle() (closed int) {
	for _, t := range p.Targets() {
		closed += t.CloseIdle()
	}
	return closed
}

// CloseAll closes every connection of every target, ending the requests
// still running on the pool.
func (p *Pool) CloseAll() (closed int) {
	for _, t := range p.Targets() {
		closed += t.CloseAll()
	}
	return closed
}
