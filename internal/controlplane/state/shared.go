package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Shared is a Store several cutovers use at once (etcd): besides the
// desired state it carries who is deploying (a lock with a lease), which
// instances are alive, what each has applied and whether each is ready to
// be switched to a pool. The control plane follows it (Follow) and applies
// every change made through any instance as it applies its own.
type Shared interface {
	Store
	// Instance is this cutover's name among those sharing the store.
	Instance() string
	// Follow hands f every desired state committed by anyone, and every
	// deploy announced by another instance, until ctx ends. After each
	// (re)connect f gets a full snapshot first.
	Follow(ctx context.Context, f Follower)
	// Lock takes the deploy lock of i.Service for i, held by a lease
	// that ends with this process; it is refused at once (*LockedError)
	// when another deploy holds it. The lock announces i to the other
	// instances, which start checking i.Pool. A deploy with a canary or
	// guard (i.Trial) holds it until its trial is over, however long.
	Lock(ctx context.Context, i Intent) (release func(), err error)
	// EndTrial asks the instance whose trial (canary, guard) holds the
	// deploy lock of service to end it (action: promote or abort) and
	// waits until that trial has acted: the service's stable or canary
	// pool changed, or the lock was let go (also when its holder died
	// and the lease expired). It returns the holder and the service's revision then, for
	// the caller to await. ErrNoTrial: no trial holds the lock (the
	// caller ends a held canary itself); *LockedError: a deploy without
	// a trial holds it.
	EndTrial(ctx context.Context, service, action string) (holder Intent, rev int64, err error)
	// AwaitReady waits until every other live instance reports i.Pool
	// ready for i; wait receives who is still waiting on what as it
	// changes. It fails with *NotReadyError when ctx ends first.
	AwaitReady(ctx context.Context, i Intent, wait func([]Waiting)) error
	// PublishReady reports this instance's view of a pool for an intent.
	PublishReady(ctx context.Context, r Readiness) error
	// Applied records the desired state this instance applies now: it
	// is cached on disk (served at a start while the store is down) and
	// its revision published for status.
	Applied(services map[string]Service)
	// Problem says why the store cannot be used now ("" when it can):
	// while set, this instance is stale.
	Problem() string
	// Status is every instance and how far each is behind.
	Status(ctx context.Context) SharedStatus
	// Close stops the store's background work and lets go of its leases.
	Close() error
}

// Follower is what follows a Shared store (the control plane).
type Follower interface {
	// ApplyStored makes the desired states in services current (those
	// with a newer revision than applied). full: services is the whole
	// store, after a (re)connect.
	ApplyStored(services map[string]Service, full bool)
	// Announced tells of a deploy or rollback announced by another
	// instance (on) or finished (off): the follower checks i.Pool itself
	// and publishes its readiness.
	Announced(i Intent, on bool)
	// TrialEndAsked tells that an instance asked the trial holding the
	// deploy lock to end (see Shared.EndTrial): the follower running
	// that trial ends it.
	TrialEndAsked(e TrialEnd)
}

// TrialEnd is a request to end the trial that holds a deploy lock.
type TrialEnd struct {
	Service string `json:"service"`
	// ID is the holding intent's.
	ID string `json:"id"`
	// Action is admin.OpPromote or admin.OpAbort.
	Action string `json:"action"`
	// By is the instance that asked.
	By string `json:"by"`
}

// ErrNoTrial is an EndTrial with no trial holding the service's lock.
var ErrNoTrial = errors.New("no canary or guard holds the deploy lock")

// Intent is a deploy or rollback announced through the deploy lock.
type Intent struct {
	// ID tells one attempt from the next on the same pool.
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`
	Service  string    `json:"service"`
	Pool     string    `json:"pool"`
	Instance string    `json:"instance"`
	Targets  []Target  `json:"targets,omitempty"`
	Started  time.Time `json:"started"`
	// Trial describes the deploy's canary and guard ("" without one),
	// e.g. "canary 10%, 50%": such a deploy holds the lock until its
	// trial is over.
	Trial string `json:"trial,omitempty"`
}

// NewIntentID returns a fresh Intent.ID.
func NewIntentID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Readiness is one instance's view of the pool an intent switches to.
type Readiness struct {
	ID       string            `json:"id"`
	Service  string            `json:"service"`
	Pool     string            `json:"pool"`
	Instance string            `json:"instance"`
	Ready    bool              `json:"ready"`
	Targets  []TargetReadiness `json:"targets,omitempty"`
	// Problem is why the instance cannot check the pool at all.
	Problem string `json:"problem,omitempty"`
}

// TargetReadiness is one target as an instance sees it.
type TargetReadiness struct {
	Addr   string `json:"addr"`
	Ready  bool   `json:"ready"`
	Passes int    `json:"passes"`
	Needed int    `json:"needed"`
	Error  string `json:"error,omitempty"`
}

// Waiting is an instance the switch waits for, and why.
type Waiting struct {
	Instance string
	// Reported: the instance has reported on this attempt (else it has
	// not started checking yet).
	Reported bool
	Problem  string
	// Targets are the targets it does not see ready.
	Targets []TargetReadiness
}

func (w Waiting) String() string {
	switch {
	case w.Problem != "":
		return fmt.Sprintf("instance %s: %s", w.Instance, w.Problem)
	case !w.Reported:
		return fmt.Sprintf("instance %s has not reported yet", w.Instance)
	}
	var ts []string
	for _, t := range w.Targets {
		s := fmt.Sprintf("%s (%d/%d checks", t.Addr, t.Passes, t.Needed)
		if t.Error != "" {
			s += ", " + t.Error
		}
		ts = append(ts, s+")")
	}
	return fmt.Sprintf("instance %s waits on %s", w.Instance, strings.Join(ts, ", "))
}

// NotReadyError is a switch that did not get every instance's readiness.
type NotReadyError struct {
	Waiting []Waiting
	Err     error
}

func (e *NotReadyError) Error() string {
	ws := make([]string, len(e.Waiting))
	for i, w := range e.Waiting {
		ws[i] = w.String()
	}
	return fmt.Sprintf("not every cutover instance sees the pool ready (%v): %s", e.Err, strings.Join(ws, "; "))
}

func (e *NotReadyError) Unwrap() error { return e.Err }

// LockedError is a deploy lock held by another deploy.
type LockedError struct {
	Holder Intent
	Where  string
}

func (e *LockedError) Error() string {
	if h := e.Holder; h.Trial != "" {
		return fmt.Sprintf("the %s of service %q to pool %q run by instance %s (started %s) holds the deploy lock in %s — end it first with cutover promote (the full switch to %q) or cutover abort (every client back on the stable pool), through any instance",
			h.Trial, h.Service, h.Pool, h.Instance, h.Started.Format(time.RFC3339), e.Where, h.Pool)
	}
	return fmt.Sprintf("a %s of service %q to pool %q through instance %s (started %s) holds the deploy lock in %s — wait for it to finish, then retry",
		e.Holder.Kind, e.Holder.Service, e.Holder.Pool, e.Holder.Instance, e.Holder.Started.Format(time.RFC3339), e.Where)
}

// SharedStatus is the shared store as one instance sees it.
type SharedStatus struct {
	Where    string
	Instance string
	// Problem is why the store cannot be reached ("" when it can): the
	// instance is stale and serves the last state it applied.
	Problem string
	// Applied is the revision this instance has applied; Latest the
	// newest revision of any service in the store (0 when unknown).
	Applied, Latest int64
	Instances       []InstanceStatus
}

// InstanceStatus is one live instance.
type InstanceStatus struct {
	Name    string
	Applied int64
	// Behind counts the services whose stored state is newer than what
	// the instance applied.
	Behind int
	Stale  bool
	Since  time.Time
}
