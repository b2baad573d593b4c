// Package guard judges a pool that has just started taking traffic against
// the pool it replaces, using the numbers the proxy itself measured for
// both (package stats): no metrics server, no queries to write. A deploy
// with a guard watches the new pool for the guard's window and rolls back
// at once when the judgement is a breach.
package guard

import (
	"fmt"
	"time"

	"github.com/cutover/cutover/internal/dataplane/stats"
	"github.com/cutover/cutover/internal/human"
)

// Defaults of Settings.
const (
	// DefaultErrorMargin is how far above the old pool's error rate the new
	// one may go when MaxErrorRate is not set: one percentage point.
	DefaultErrorMargin = 0.01
	// DefaultLatencyRatio bounds the new pool's p99 against the old one's.
	DefaultLatencyRatio = 2.0
	// DefaultMinRequests is how many requests the new pool must have served
	// before it is judged at all: a handful of requests says nothing.
	DefaultMinRequests = 50
	// minLatencyRequests is the fewest requests a p99 is judged on.
	minLatencyRequests = 100
	// BaselineSpan is how far back before the switch the old pool's
	// numbers are taken from (the stats window keeps this much).
	BaselineSpan = 5 * time.Minute
)

// Settings are a guard's thresholds. Zero values take the defaults.
type Settings struct {
	// Window is how long the new pool is watched after it starts taking
	// traffic.
	Window time.Duration
	// MaxErrorRate is the highest error rate (0..1) the new pool may have;
	// 0: the old pool's own rate plus DefaultErrorMargin.
	MaxErrorRate float64
	// MaxLatencyRatio is the highest p99 the new pool may have, as a
	// multiple of the old pool's p99; 0: DefaultLatencyRatio.
	MaxLatencyRatio float64
	// MinRequests is the number of requests before a judgement; 0:
	// DefaultMinRequests.
	MinRequests uint64
}

// Validate names what is wrong with s, or returns nil.
func (s Settings) Validate() error {
	switch {
	case s.Window <= 0:
		return fmt.Errorf("guard window %s: give a duration above 0, e.g. 5m", s.Window)
	case s.MaxErrorRate < 0 || s.MaxErrorRate >= 1:
		return fmt.Errorf("max error rate %g: give a share between 0 and 1 (e.g. 1%%), or leave it out for the old pool's rate plus 1 point", s.MaxErrorRate)
	case s.MaxLatencyRatio < 0 || (s.MaxLatencyRatio > 0 && s.MaxLatencyRatio < 1):
		return fmt.Errorf("max latency ratio %gx: give a ratio of 1x or more (e.g. 2x)", s.MaxLatencyRatio)
	}
	return nil
}

// Judge holds the old pool's numbers and judges the new pool's.
type Judge struct {
	s        Settings
	baseline stats.Summary
	maxErr   float64
	ratio    float64
	minReq   uint64
}

// New returns a judge with the old pool's baseline.
func New(s Settings, baseline stats.Summary) *Judge {
	j := &Judge{s: s, baseline: baseline, maxErr: s.MaxErrorRate, ratio: s.MaxLatencyRatio, minReq: s.MinRequests}
	if j.maxErr == 0 {
		j.maxErr = baseline.ErrorRate() + DefaultErrorMargin
	}
	if j.ratio == 0 {
		j.ratio = DefaultLatencyRatio
	}
	if j.minReq == 0 {
		j.minReq = DefaultMinRequests
	}
	return j
}

// Baseline is the old pool's numbers the judge compares with.
func (j *Judge) Baseline() stats.Summary { return j.baseline }

// MaxErrorRate is the error rate above which the new pool breaches.
func (j *Judge) MaxErrorRate() float64 { return j.maxErr }

// MaxP99 is the p99 above which the new pool breaches; 0 when the old pool
// gave no latency to compare with.
func (j *Judge) MaxP99() time.Duration {
	if j.baseline.P99 == 0 || j.baseline.Requests < j.minReq {
		return 0
	}
	return time.Duration(float64(j.baseline.P99) * j.ratio)
}

// Verdict is a judgement of the new pool's numbers.
type Verdict struct {
	Current stats.Summary
	// Judged is false while the new pool has served fewer than the
	// minimum requests.
	Judged bool
	// Breach says why the new pool fails ("" when it does not).
	Breach string
}

// Judge judges the new pool's numbers since it started taking traffic.
func (j *Judge) Judge(cur stats.Summary) Verdict {
	v := Verdict{Current: cur}
	if cur.Requests < j.minReq {
		return v
	}
	v.Judged = true
	if r := cur.ErrorRate(); r > j.maxErr {
		v.Breach = fmt.Sprintf("error rate %s over %d requests is above the limit %s (the old pool had %s)",
			pct(r), cur.Requests, pct(j.maxErr), pct(j.baseline.ErrorRate()))
		return v
	}
	// A p99 of fewer than a hundred requests is their slowest one, often
	// a cold connection: latency is judged on enough requests only.
	if limit := j.MaxP99(); limit > 0 && cur.Requests >= max(j.minReq, minLatencyRequests) && cur.P99 > limit {
		v.Breach = fmt.Sprintf("p99 latency %s is above %gx the old pool's %s (limit %s)",
			human.Duration(cur.P99), j.ratio, human.Duration(j.baseline.P99), human.Duration(limit))
	}
	return v
}

func pct(r float64) string { return fmt.Sprintf("%.2f%%", 100*r) }
