// Package upstream holds what requests are sent to: targets (one backend
// address each, with its health verdict, counters and keep-alive
// connections) and pools (one colour of a service: a set of targets, a
// balancer and the in-flight count that drain waits on).
package upstream

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// State is a target's health verdict.
type State int32

// Health states.
const (
	// Unknown: not yet passed the healthy threshold; takes no traffic.
	Unknown State = iota
	// Up: takes traffic.
	Up
	// Down: failed the unhealthy threshold or a connection attempt.
	Down
)

func (s State) String() string {
	switch s {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return "unknown"
}

// Thresholds are the consecutive probe results that change a verdict.
type Thresholds struct {
	Healthy, Unhealthy int
}

// Target is one backend address.
type Target struct {
	addr string
	// label names the target for people: a container name, or the address.
	// A reload may rename a target that health checks and status read.
	label atomic.Pointer[string]
	opts  *ConnOptions

	state    atomic.Int32
	inflight atomic.Int64
	served   atomic.Uint64
	failures atomic.Uint64

	mu        sync.Mutex
	passes    int // consecutive probe passes
	fails     int // consecutive probe failures
	lastErr   string
	lastProbe time.Time
	changed   time.Time
	conns     connSet

	// ap is addr parsed, for callers that connect with raw sockets; apOK
	// is false when addr is a host name, which needs a resolver.
	ap   netip.AddrPort
	apOK bool

	// Outlier detection and latency (outlier.go). pool is the pool the
	// target is in, whose share of ejected targets is bounded.
	lat        latency
	pool       atomic.Pointer[Pool]
	consec     atomic.Int32 // failures in a row
	ejectUntil atomic.Int64 // nanotime the ejection ends; 0: not ejected
	ejections  atomic.Uint64
	// ejectRun counts ejections that followed each other closely (the
	// interval doubles along a run); lastEjectEnd is when the last ended.
	// Both under mu.
	ejectRun     int
	lastEjectEnd int64
	// Connections held outside conns (the event loops keep their own, as
	// one loop's connections are useless to another): the loops count them
	// here for Conns, and follow idleGen and allGen to close theirs when
	// CloseIdle or CloseAll is called.
	extOpen, extIdle atomic.Int64
	idleGen, allGen  atomic.Uint64
	retired          atomic.Bool
	// lived holds the target's long-lived exchanges, for drains to say
	// goodbye to (goodbye.go).
	lived longLived
}

// TargetOptions configure a new target.
type TargetOptions struct {
	Addr  string
	Label string // defaults to Addr
	// Initial verdict: Up for targets that serve at once (the active pool at
	// first start), Unknown for targets that must pass health checks first.
	Initial State
	Conn    *ConnOptions
}

// NewTarget returns a target with no connections.
func NewTarget(o TargetOptions) *Target {
	t := &Target{addr: o.Addr, opts: o.Conn}
	label := o.Label
	if label == "" {
		label = o.Addr
	}
	t.label.Store(&label)
	if t.opts == nil {
		t.opts = DefaultConnOptions()
	}
	t.state.Store(int32(o.Initial))
	t.changed = time.Now()
	t.ap, t.apOK = parseAddrPort(o.Addr)
	return t
}

func parseAddrPort(addr string) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// AddrPort is the target's address as IP and port; ok is false when the
// address names a host, which only a resolver can turn into an IP.
func (t *Target) AddrPort() (ap netip.AddrPort, ok bool) { return t.ap, t.apOK }

// Addr is the host:port connections go to.
func (t *Target) Addr() string { return t.addr }

// Label names the target for people.
func (t *Target) Label() string { return *t.label.Load() }

// State returns the current verdict.
func (t *Target) State() State { return State(t.state.Load()) }

// InFlight is the number of requests using the target now.
func (t *Target) InFlight() int64 { return t.inflight.Load() }

// Served is the number of requests the target has answered.
func (t *Target) Served() uint64 { return t.served.Load() }

// Begin and End bracket one request on the target.
func (t *Target) Begin() { t.inflight.Add(1) }

// End ends a request begun with Begin; answered says the target responded.
func (t *Target) End(answered bool) {
	t.inflight.Add(-1)
	if answered {
		t.served.Add(1)
	}
}

// Status is a snapshot of a target for status output.
type Status struct {
	Addr      string    `json:"addr"`
	Label     string    `json:"label"`
	State     string    `json:"state"`
	LastError string    `json:"last_error,omitempty"`
	LastProbe time.Time `json:"last_probe,omitempty"`
	Since     time.Time `json:"since"`
	InFlight  int64     `json:"in_flight"`
	Served    uint64    `json:"served"`
	Failures  uint64    `json:"failures"`
	// Ejected says outlier detection keeps the target out now; Ejections
	// counts the times it did; Latency is the peak-EWMA estimate.
	Ejected   bool          `json:"ejected,omitempty"`
	Ejections uint64        `json:"ejections,omitempty"`
	Latency   time.Duration `json:"latency_ns,omitempty"`
}

// Status returns a snapshot.
func (t *Target) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Status{
		Addr: t.addr, Label: t.Label(), State: t.State().String(),
		LastError: t.lastErr, LastProbe: t.lastProbe, Since: t.changed,
		InFlight: t.inflight.Load(), Served: t.served.Load(), Failures: t.failures.Load(),
		Ejected: t.Ejected(), Ejections: t.ejections.Load(), Latency: t.Latency(),
	}
}

// ReportProbe records an active health check result and returns the
// verdict after it. A verdict changes only after th.Healthy consecutive
// passes or th.Unhealthy consecutive failures.
func (t *Target) ReportProbe(err error, th Thresholds) State {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastProbe = time.Now()
	st := t.State()
	if err == nil {
		t.passes++
		t.fails = 0
		t.lastErr = ""
		if st != Up && t.passes >= th.Healthy {
			t.setState(Up)
		}
	} else {
		t.fails++
		t.passes = 0
		t.lastErr = err.Error()
		if st != Down && t.fails >= th.Unhealthy {
			t.setState(Down)
		}
	}
	return t.State()
}

// ReportFailure marks the target down at once after a connection to it
// failed (passive health): a refused connection means nothing listens, so
// waiting for the active checker would only fail more requests. Active
// checks bring it back.
func (t *Target) ReportFailure(err error) {
	t.failures.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.passes = 0
	t.lastErr = err.Error()
	if t.State() != Down {
		t.setState(Down)
	}
}

// LastError is the most recent probe or connection error ("" after a pass).
func (t *Target) LastError() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastErr
}

// ResetVerdict forgets the consecutive counts so that a deploy judges the
// target on fresh probes.
func (t *Target) ResetVerdict() {
	t.mu.Lock()
	t.passes, t.fails = 0, 0
	t.mu.Unlock()
}

// ConsecutivePasses is the current run of passing probes.
func (t *Target) ConsecutivePasses() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.passes
}

// setState changes the verdict; the caller holds t.mu. Requests waiting
// on a target that goes down move to another when they may.
func (t *Target) setState(s State) {
	t.state.Store(int32(s))
	t.changed = time.Now()
	if s != Up {
		t.wakeMovable()
	}
}
