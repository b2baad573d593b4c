package upstream

import (
	"math"
	"strings"
	"time"
)

// Balance names a balancing policy: how a pool picks a target for a
// request. Each policy is a small type (a policy) in the table below, which
// is the one place the policy names are defined; configuration validation
// lists its choices from BalanceNames.
type Balance uint8

// Balance policies.
const (
	// PeakEWMA picks the target with the lowest expected wait: a decaying
	// peak of its response latency times its requests in flight plus one
	// (Finagle's and Linkerd's "peak EWMA"). A slow or hung target loses
	// traffic as soon as its requests take longer, not when it fails.
	PeakEWMA Balance = iota
	// RoundRobin takes the targets in turn.
	RoundRobin
	// LeastConn picks the target with the fewest requests in flight.
	LeastConn
)

// DefaultBalance is the policy of a service whose configuration names none.
// Peak EWMA is the default because it measured better with one slow or hung
// target (bench/outlier, README "Balancing and outlier detection") and no
// worse with equal ones.
const DefaultBalance = PeakEWMA

// policy picks one of the targets f admits. turn rotates among targets
// that are equally good, so that ties spread evenly.
type policy interface {
	name() string
	pick(ts []*Target, turn uint32, f filter) *Target
}

var policies = [...]policy{
	PeakEWMA:   peakEWMA{},
	RoundRobin: roundRobin{},
	LeastConn:  leastConn{},
}

// ParseBalance maps a configuration name to a policy; "" is DefaultBalance.
func ParseBalance(s string) (Balance, bool) {
	if s == "" {
		return DefaultBalance, true
	}
	for i, p := range policies {
		if p.name() == s {
			return Balance(i), true
		}
	}
	return 0, false
}

// BalanceNames lists the policy names, the default first.
func BalanceNames() []string {
	names := []string{DefaultBalance.String()}
	for i, p := range policies {
		if Balance(i) != DefaultBalance {
			names = append(names, p.name())
		}
	}
	return names
}

// BalanceChoices is BalanceNames for messages: "a, b or c".
func BalanceChoices() string {
	n := BalanceNames()
	return strings.Join(n[:len(n)-1], ", ") + " or " + n[len(n)-1]
}

func (b Balance) String() string {
	if int(b) < len(policies) {
		return policies[b].name()
	}
	return DefaultBalance.String()
}

func (b Balance) policy() policy {
	if int(b) < len(policies) {
		return policies[b]
	}
	return policies[DefaultBalance]
}

// filter says which targets a pick may return.
type filter struct {
	tried []*Target
	// level: healthy only (Up and not ejected), Up (ejected or not), or any.
	level eligibility
	now   int64 // nanotime(), for ejection deadlines and latency decay
}

type eligibility uint8

const (
	onlyHealthy eligibility = iota
	onlyUp
	anyTarget
)

func (f *filter) ok(t *Target) bool {
	switch f.level {
	case onlyHealthy:
		if !t.healthyAt(f.now) {
			return false
		}
	case onlyUp:
		if t.State() != Up {
			return false
		}
	}
	return !contains(f.tried, t)
}

// roundRobin takes candidate number turn modulo their count. Counting them
// first keeps the rotation even: rotating over all targets and skipping the
// ineligible ones would hand a skipped target's turns to the one after it
// (with one of three targets down, another would get two thirds).
type roundRobin struct{}

func (roundRobin) name() string { return "round_robin" }

func (roundRobin) pick(ts []*Target, turn uint32, f filter) *Target {
	var first *Target
	var count uint32
	for _, t := range ts {
		if f.ok(t) {
			if first == nil {
				first = t
			}
			count++
		}
	}
	if count <= 1 {
		return first
	}
	k := turn % count
	for _, t := range ts {
		if !f.ok(t) {
			continue
		}
		if k == 0 {
			return t
		}
		k--
	}
	// A verdict changed between the two passes.
	return first
}

// leastConn takes, among the candidates with the fewest requests in
// flight, number turn modulo their count.
type leastConn struct{}

func (leastConn) name() string { return "least_conn" }

func (leastConn) pick(ts []*Target, turn uint32, f filter) *Target {
	var first *Target
	var count uint32
	var minLoad int64
	for _, t := range ts {
		if !f.ok(t) {
			continue
		}
		switch l := t.inflight.Load(); {
		case first == nil || l < minLoad:
			first, minLoad, count = t, l, 1
		case l == minLoad:
			count++
		}
	}
	if count <= 1 {
		return first
	}
	k := turn % count
	for _, t := range ts {
		if !f.ok(t) || t.inflight.Load() != minLoad {
			continue
		}
		if k == 0 {
			return t
		}
		k--
	}
	return first
}

// peakEWMA takes the candidate of lowest cost (Target.cost), scanning from
// a rotating start so that equal costs (fresh targets) take turns. A full
// scan rather than Finagle's two random choices: pools are small, and the
// in-flight factor of the cost already keeps concurrent picks from all
// landing on one target.
type peakEWMA struct{}

func (peakEWMA) name() string { return "peak_ewma" }

func (peakEWMA) pick(ts []*Target, turn uint32, f filter) *Target {
	n := len(ts)
	start := int(turn % uint32(n))
	var best *Target
	bestCost := math.Inf(1)
	for i := range n {
		t := ts[(start+i)%n]
		if !f.ok(t) {
			continue
		}
		if c := t.cost(f.now); best == nil || c < bestCost {
			best, bestCost = t, c
		}
	}
	return best
}

// decayTau is how fast a latency peak is forgotten: the estimate falls to
// 1/e of a peak after decayTau without slower responses (Finagle's and
// Linkerd's default). A target that was slow is therefore tried again
// some time after its last slow answer, and judged on that answer.
const decayTau = 10 * time.Second

// epoch anchors nanotime; it is set once at start and never written again.
var epoch = time.Now()

// nanotime is monotonic nanoseconds since epoch: small enough to sum the
// start times of a target's waiting requests without overflow.
func nanotime() int64 { return int64(time.Since(epoch)) }

// nanoOf converts a time to nanotime's scale.
func nanoOf(t time.Time) int64 { return int64(t.Sub(epoch)) }
