package admin

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cutover/cutover/internal/human"
)

// The types in this file are the admin API's JSON schema, shared by the
// control plane that answers and the CLI that asks: field names and
// meanings are kept stable for scripts; new fields may be added.

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("60s", "1m30s"); a JSON number is read as nanoseconds.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w (write e.g. 60s or 1m30s)", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration %s: want a string such as \"60s\"", b)
	}
	*d = Duration(n)
	return nil
}

// String formats like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// DefaultTimeout is how long a deploy or rollback waits for its pool to be
// healthy when the request gives no timeout.
const DefaultTimeout = 60 * time.Second

// DeployRequest asks to switch a service to a pool.
type DeployRequest struct {
	// Service may be empty when cutover serves exactly one service.
	Service string `json:"service"`
	// Pool is switched to. With Targets it may be a new pool name.
	Pool string `json:"pool"`
	// Targets, when given, first become the pool's targets (host:port).
	Targets []string `json:"targets,omitempty"`
	// Timeout bounds the wait for every target to be healthy (default 60s).
	Timeout Duration `json:"timeout,omitempty"`
	// Expect, when set, is the pool the caller saw active: the deploy is
	// refused when another one is active by the time it would switch.
	Expect string `json:"expect,omitempty"`
	// Origin names what asked for the deploy, for the history: "" (a
	// deploy) or OriginRelease.
	Origin string `json:"origin,omitempty"`
	// Canary, when given, sends these percentages of the service's
	// clients to Pool in turn, each rising (e.g. [10, 50]), before the
	// full switch. Clients are sticky (a cookie, else a hash of their
	// address).
	Canary []float64 `json:"canary,omitempty"`
	// Step is how long each canary percentage holds before the next one
	// (after the last: the full switch). 0 holds the first percentage
	// until promote or abort.
	Step Duration `json:"step,omitempty"`
	// Guard, when set, watches Pool from when it starts taking traffic and
	// rolls back at once when it does worse than the pool it replaces.
	Guard *GuardSettings `json:"guard,omitempty"`
	// Detach returns once Pool takes traffic; the canary steps and the
	// guard go on in cutover serve. Without it the call lasts until they
	// are done.
	Detach bool `json:"detach,omitempty"`
	// Preview makes Pool, once healthy, the pool of the service's
	// preview_hosts only; live traffic does not move (then cutover promote
	// or cutover abort).
	Preview bool `json:"preview,omitempty"`
	// StopOld, when set, has cutover serve stop the Docker containers of
	// the pool that was active this long after the switch (0: right after
	// the drain), unless it is routed to again before then (a rollback).
	// The stop is kept in the desired state: it happens whether or not
	// the caller is still there. Only for a plain switch (no canary,
	// guard, preview or detach) of a service whose active pool follows
	// Docker containers.
	StopOld *Duration `json:"stop_old,omitempty"`
}

// GuardSettings are a deploy's automatic-rollback thresholds; zero values
// take the defaults (see package controlplane/guard).
type GuardSettings struct {
	// Window is how long the new pool is watched (required).
	Window Duration `json:"window"`
	// MaxErrorRate (0..1): 0 means the old pool's own rate plus 1 point.
	MaxErrorRate float64 `json:"max_error_rate,omitempty"`
	// MaxLatencyRatio bounds the new pool's p99 as a multiple of the old
	// pool's (0: 2).
	MaxLatencyRatio float64 `json:"max_latency_ratio,omitempty"`
	// MinRequests before a judgement (0: 50).
	MinRequests uint64 `json:"min_requests,omitempty"`
}

// TrialRequest asks to end a service's canary or preview: PromoteRequest
// makes its pool the stable one (the full switch, with its drain), and
// AbortRequest sends every request back to the stable pool at once.
type TrialRequest struct {
	Service string `json:"service"`
	// Timeout bounds a promotion's health wait (default 60s).
	Timeout Duration `json:"timeout,omitempty"`
}

// GuardReport is what a guard measured: the new pool against the old one.
type GuardReport struct {
	Pool     string    `json:"pool"`     // the pool watched
	Baseline string    `json:"baseline"` // the pool it is compared with
	Started  time.Time `json:"started"`
	Ends     time.Time `json:"ends"`
	// Requests, ErrorRate and P99MS are the watched pool's numbers since it
	// started taking traffic; the Baseline* fields the old pool's over the
	// minutes before.
	Requests          uint64  `json:"requests"`
	ErrorRate         float64 `json:"error_rate"`
	P99MS             float64 `json:"p99_ms"`
	BaselineRequests  uint64  `json:"baseline_requests"`
	BaselineErrorRate float64 `json:"baseline_error_rate"`
	BaselineP99MS     float64 `json:"baseline_p99_ms"`
	// MaxErrorRate and MaxP99MS are the limits in force (MaxP99MS 0: no
	// latency to compare with).
	MaxErrorRate float64 `json:"max_error_rate"`
	MaxP99MS     float64 `json:"max_p99_ms"`
	// Breach says why the guard rolled back ("" when it did not);
	// BreachedAt is when it found it and RolledBackAt when every client
	// was back on the old pool.
	Breach       string    `json:"breach,omitempty"`
	BreachedAt   time.Time `json:"breached_at,omitempty"`
	RolledBackAt time.Time `json:"rolled_back_at,omitempty"`
	// Done is true once the window passed or the guard acted.
	Done bool `json:"done"`
}

// OriginRelease marks a deploy made by `cutover release`.
const OriginRelease = "release"

// RollbackRequest asks to switch a service back to its previous pool.
type RollbackRequest struct {
	Service string   `json:"service"`
	Timeout Duration `json:"timeout,omitempty"`
	// Expect, when set, is the pool the caller saw active: the rollback
	// is refused when another one is active (so ten retries of one
	// rollback flip the service once).
	Expect string `json:"expect,omitempty"`
}

// Operation kinds.
const (
	OpDeploy   = "deploy"
	OpRollback = "rollback"
	OpPromote  = "promote"
	OpAbort    = "abort"
	// OpStop is cutover serve stopping the containers of a pool whose
	// DeployRequest.StopOld time came.
	OpStop = "stop"
)

// Operation is a deploy or rollback in progress.
type Operation struct {
	Kind    string    `json:"kind"` // "deploy" or "rollback"
	Service string    `json:"service"`
	Pool    string    `json:"pool"` // the pool being switched to
	Started time.Time `json:"started"`
	// Progress: the phase it is in (PhaseTargets, PhaseHealth, PhaseSwitch,
	// PhaseDrain; "" before the first step) and its last message; Ready of
	// Total targets of Pool have passed the health gate; DrainLeft requests
	// are still running on the pool being drained (phase drain).
	Phase     string `json:"phase,omitempty"`
	Message   string `json:"message,omitempty"`
	Ready     int    `json:"ready"`
	Total     int    `json:"total"`
	DrainLeft int64  `json:"drain_left"`
}

func (o *Operation) String() string {
	if o.Kind == OpStop {
		return fmt.Sprintf("stop of the containers of pool %q of service %q (started %s, %s ago)",
			o.Pool, o.Service, o.Started.Format("15:04:05"), human.Duration(time.Since(o.Started)))
	}
	return fmt.Sprintf("%s of service %q to pool %q (started %s, %s ago)",
		o.Kind, o.Service, o.Pool, o.Started.Format("15:04:05"), human.Duration(time.Since(o.Started)))
}

// DeployResult reports a finished deploy or rollback.
type DeployResult struct {
	Service   string `json:"service"`
	Operation string `json:"operation"` // "deploy" or "rollback"
	// NoOp is true when the pool was already active and nothing changed.
	NoOp bool `json:"no_op"`
	// Message is a one-line summary for people.
	Message string `json:"message"`
	// Pool is the pool now active; From the one that was active before.
	Pool string `json:"pool"`
	From string `json:"from"`
	// TimeToHealthy is from the start of the health wait until every
	// target of Pool had passed (0 when no wait was needed).
	TimeToHealthy Duration `json:"time_to_healthy"`
	// SwitchedAt is when the active pool changed.
	SwitchedAt time.Time `json:"switched_at"`
	// InFlightAtSwitch is the number of requests running on From at the
	// switch; Drained of them finished within the drain timeout, and
	// ClosedAtTimeout were still running when it passed and were ended by
	// closing their upstream connections (ConnsClosed of them).
	InFlightAtSwitch int64 `json:"in_flight_at_switch"`
	Drained          int64 `json:"drained"`
	ClosedAtTimeout  int64 `json:"closed_at_timeout"`
	ConnsClosed      int   `json:"conns_closed_at_timeout"`
	// Goodbyes is the number of long-lived connections on From (WebSockets,
	// event streams) told to close cleanly near the end of the drain,
	// spread over its last part (drain_close_spread).
	Goodbyes int64 `json:"goodbyes"`
	// TimeToDrain is from the switch until From had no request in flight
	// (or the drain timeout passed).
	TimeToDrain Duration `json:"time_to_drain"`
	// Warnings are problems that did not stop the switch.
	Warnings []string `json:"warnings,omitempty"`
	// Canary is the percentage of clients Pool takes when the deploy ended
	// in a canary that holds (0: it took them all, or none).
	Canary float64 `json:"canary,omitempty"`
	// Preview is the pool a --preview deploy put behind the preview hosts
	// (live traffic stays on Pool).
	Preview string `json:"preview,omitempty"`
	// Guard is what the guard measured (nil: no guard).
	Guard *GuardReport `json:"guard,omitempty"`
	// StopsAt is when cutover serve stops the containers of From
	// (DeployRequest.StopOld; nil: it keeps running).
	StopsAt *time.Time `json:"stops_at,omitempty"`
	// Revision is the revision of the desired state the change committed
	// (0: none).
	Revision int64 `json:"revision,omitempty"`
	// AppliedBy are the instances seen applying a change the CLI
	// committed to a shared store itself (cutover deploy --etcd); each
	// drains what lost traffic on its own, so the drain fields are 0.
	AppliedBy []string `json:"applied_by,omitempty"`
}

// Event phases.
const (
	PhaseTargets = "targets" // pool targets set
	PhaseHealth  = "health"  // waiting for the pool to be healthy
	PhaseSwitch  = "switch"  // the active pool changed
	PhaseDrain   = "drain"   // the old pool is draining / drained
	PhaseCanary  = "canary"  // the pool takes a share of the clients
	PhaseGuard   = "guard"   // the guard watches the pool
)

// Event is one step of a deploy or rollback in progress.
type Event struct {
	Time    time.Time `json:"time"`
	Service string    `json:"service"`
	Pool    string    `json:"pool"`
	Phase   string    `json:"phase"`
	// Message says what happened, for people.
	Message string `json:"message"`
	// Target is the target whose health changed (phase "health").
	Target *TargetProgress `json:"target,omitempty"`
	// Ready and Total count the pool's healthy targets (phase "health").
	Ready int `json:"ready,omitempty"`
	Total int `json:"total,omitempty"`
}

// TargetProgress is one target's health during a deploy's wait.
type TargetProgress struct {
	// Instance is the cutover that sees the target so (absent: the one
	// answering; with a shared store, another live instance).
	Instance string `json:"instance,omitempty"`
	Addr     string `json:"addr"`
	Label    string `json:"label,omitempty"`
	State    string `json:"state"`
	Passes   int    `json:"passes"` // consecutive passing probes since the deploy began
	Needed   int    `json:"needed"` // passes needed (health.healthy)
	Ready    bool   `json:"ready"`
	Error    string `json:"error,omitempty"` // last probe error
}

// ServiceStatus is the state of one service.
type ServiceStatus struct {
	Name string `json:"name"`
	// Hosts routed to the service; empty for the default service.
	Hosts []string `json:"hosts"`
	// PreviewHosts go to the preview pool (the active one when none).
	PreviewHosts []string `json:"preview_hosts,omitempty"`
	Active       string   `json:"active"`
	Previous     string   `json:"previous"`          // "" when there is none
	Preview      string   `json:"preview,omitempty"` // the preview pool, "" when none
	// Revision is the store revision of the desired state applied now.
	Revision int64  `json:"revision"`
	Balance  string `json:"balance"`
	// Operation is the deploy or rollback in progress (null if none).
	Operation *Operation `json:"operation"`
	// Canary is the pool taking CanaryPercent of the service's clients
	// ("" when there is no canary).
	Canary        string  `json:"canary,omitempty"`
	CanaryPercent float64 `json:"canary_percent,omitempty"`
	// Guard is a guard watching a pool now, with its current numbers.
	Guard *GuardReport `json:"guard,omitempty"`
	Pools []PoolStatus `json:"pools"`
}

// Pool sources.
const (
	SourceConfig  = "config"  // targets from the configuration file
	SourceRuntime = "runtime" // targets set by deploy --target
	SourceDocker  = "docker"  // targets from Docker containers
)

// PoolStatus is the state of one pool.
type PoolStatus struct {
	Name    string `json:"name"`
	Active  bool   `json:"active"`
	Preview bool   `json:"preview,omitempty"`
	Source  string `json:"source"`
	// StopsAt is when cutover serve stops the pool's containers (a
	// release's --keep-old; absent: no stop is scheduled).
	StopsAt  *time.Time     `json:"stops_at,omitempty"`
	InFlight int64          `json:"in_flight"`
	Served   uint64         `json:"served"`
	Targets  []TargetStatus `json:"targets"`
	*RequestStats
}

// RequestStats are a pool's or target's requests over a recent window,
// measured by the data plane; absent (the fields are omitted) when it does
// not measure them.
type RequestStats struct {
	RPS       float64 `json:"rps"`        // requests per second
	ErrorRate float64 `json:"error_rate"` // failed share of requests, 0..1
	P50MS     float64 `json:"p50_ms"`     // median duration, milliseconds
	P99MS     float64 `json:"p99_ms"`
}

// TargetStatus is the state of one target.
type TargetStatus struct {
	Addr  string `json:"addr"`
	Label string `json:"label"`
	// State is "up", "down" or "unknown".
	State             string     `json:"state"`
	Since             time.Time  `json:"since"`
	ConsecutivePasses int        `json:"consecutive_passes"`
	LastError         string     `json:"last_error"`
	LastProbe         *time.Time `json:"last_probe"`
	InFlight          int64      `json:"in_flight"`
	Served            uint64     `json:"served"`
	Failures          uint64     `json:"failures"`
	*RequestStats
}

// ErrorKind classifies an error of the control plane, so the admin API can
// pick a status code and the CLI an exit code.
type ErrorKind string

// Error kinds.
const (
	KindInvalid   ErrorKind = "invalid"   // the request is malformed
	KindNotFound  ErrorKind = "not_found" // no such service or pool
	KindBusy      ErrorKind = "busy"      // another deploy/rollback of the service is running
	KindRefused   ErrorKind = "refused"   // valid, but not allowed in the current state
	KindUnhealthy ErrorKind = "unhealthy" // the pool did not become healthy in time
	KindCanceled  ErrorKind = "canceled"  // the caller went away before the switch
	// KindGuard: the guard found the new pool worse than the old one and
	// rolled back (Guard has the numbers).
	KindGuard    ErrorKind = "guard"
	KindState    ErrorKind = "state" // the state cannot be written, so nothing may change
	KindInternal ErrorKind = "internal"
)

// Error is a control plane error. A refused or failed deploy never touched
// live traffic.
type Error struct {
	Kind    ErrorKind `json:"kind"`
	Message string    `json:"message"`
	// Failing lists the targets that were not healthy (KindUnhealthy).
	Failing []TargetProgress `json:"failing,omitempty"`
	// Guard is what the guard measured (KindGuard).
	Guard *GuardReport `json:"guard,omitempty"`
}

// Error returns the message followed by one line per failing target.
func (e *Error) Error() string {
	if len(e.Failing) == 0 {
		return e.Message
	}
	var b strings.Builder
	b.WriteString(e.Message)
	for _, f := range e.Failing {
		b.WriteString("\n  ")
		b.WriteString(f.Describe())
	}
	return b.String()
}

// Describe says in one line which target failed and why.
func (f TargetProgress) Describe() string {
	name := f.Addr
	if f.Label != "" && f.Label != f.Addr {
		name = fmt.Sprintf("%s (%s)", f.Label, f.Addr)
	}
	if f.Instance != "" {
		// Seen by another instance sharing the store.
		name = fmt.Sprintf("instance %s: %s", f.Instance, name)
	}
	reason := f.Error
	if reason == "" {
		reason = "no failed probe, but not enough passes yet"
	}
	state := ""
	if f.State != "" {
		state = ", state " + f.State
	}
	return fmt.Sprintf("%s: %s [%d of %s passed%s]", name, reason, f.Passes, human.Count(f.Needed, "check"), state)
}
