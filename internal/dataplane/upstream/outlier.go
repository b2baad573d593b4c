package upstream

import (
	"math"
	"strconv"
	"sync"
	"time"
)

// OutlierOptions configure outlier detection (Envoy's name for it): a
// target that times out, or fails ConsecutiveFailures times in a row, is
// ejected (takes no new requests, and requests waiting on it that may move
// do) for BaseEjection, doubled on each ejection that follows within
// MaxEjection of the last one ending, up to MaxEjection. At most
// MaxEjectedPercent of a pool's targets are ejected at once, and never all
// of them, so ejection alone never leaves a pool without a target.
type OutlierOptions struct {
	// ConsecutiveFailures in a row eject: 5xx responses, try timeouts,
	// connection failures. 0: only a response timeout ejects.
	ConsecutiveFailures int
	BaseEjection        time.Duration
	MaxEjection         time.Duration
	// MaxEjectedPercent bounds the share of a pool ejected at once; 0
	// turns ejection off.
	MaxEjectedPercent int
}

// DefaultOutlierOptions are the defaults of the configuration file.
func DefaultOutlierOptions() OutlierOptions {
	return OutlierOptions{ConsecutiveFailures: 5, BaseEjection: 10 * time.Second, MaxEjection: 5 * time.Minute, MaxEjectedPercent: 50}
}

// Failure says what an attempt that got no response head tells about its
// target.
type Failure uint8

// Failures.
const (
	// NotTargetFault: the client went away, a reused idle connection had
	// been closed by the target, the target was retired, or the request
	// moved off a target already down or ejected.
	NotTargetFault Failure = iota
	// ConnectFailed: no connection could be made.
	ConnectFailed
	// ConnBroken: a fresh connection failed before the response head.
	ConnBroken
	// TryTimeout: no response head within upstream.try_timeout.
	TryTimeout
	// ResponseTimeout: no response head within upstream.response_timeout,
	// which is ample time for any target that works: it ejects at once.
	ResponseTimeout
)

// latency is a target's peak-EWMA latency estimate and its attempts
// waiting for a response head. A mutex rather than atomics: the mean age of
// the waiting attempts needs their count and the sum of their start times
// read together, and a torn read would make a target look hours slow.
type latency struct {
	mu      sync.Mutex
	est     float64 // nanoseconds
	stamp   int64   // nanotime of the last observation
	waiting int64
	waitSum int64 // sum of the waiting attempts' start nanotimes
}

// decayed is the estimate at now: a peak fades with decayTau, so a target
// that stopped being picked for being slow is tried again.
func (l *latency) decayed(now int64) float64 {
	if l.est == 0 {
		return 0
	}
	return l.est * math.Exp(-float64(now-l.stamp)/float64(decayTau))
}

// Await counts an attempt on the target that waits for a response head
// from start (the target's Begin counts the request itself).
func (t *Target) Await(start time.Time) {
	s := nanoOf(start)
	t.lat.mu.Lock()
	t.lat.waiting++
	t.lat.waitSum += s
	t.lat.mu.Unlock()
}

func (t *Target) settle(start int64) {
	t.lat.waiting--
	t.lat.waitSum -= start
}

// Answered records that the response head of an attempt begun (Await) at
// start arrived at now with status: its latency feeds the estimate, and a
// 5xx counts as a failure for outlier detection.
func (t *Target) Answered(start, now time.Time, status int) {
	s, n := nanoOf(start), nanoOf(now)
	rtt := float64(n - s)
	l := &t.lat
	l.mu.Lock()
	t.settle(s)
	// Peak EWMA: a slower answer than the estimate replaces it; a faster
	// one moves it by the time since the last answer.
	if cur := l.decayed(n); rtt > cur {
		l.est = rtt
	} else {
		w := math.Exp(-float64(n-l.stamp) / float64(decayTau))
		l.est = cur*w + rtt*(1-w)
	}
	l.stamp = n
	l.mu.Unlock()
	if status >= 500 {
		t.failed(n, false, status, nil)
		return
	}
	if t.consec.Load() != 0 {
		t.consec.Store(0)
	}
}

// Failed records that an attempt begun (Await) at start ended at now with
// no response head, for the reason f (err says it for people). Connection
// failures mark the target down at once (passive health: waiting for the
// active checker would only fail more requests; active checks bring it
// back); failures of the target count for outlier detection.
func (t *Target) Failed(start, now time.Time, f Failure, err error) {
	t.lat.mu.Lock()
	t.settle(nanoOf(start))
	t.lat.mu.Unlock()
	switch f {
	case NotTargetFault:
		return
	case ConnectFailed, ConnBroken:
		t.ReportFailure(err)
	}
	t.failed(nanoOf(now), f == ResponseTimeout, 0, err)
}

// failed counts a failure (a 5xx status, or err) and ejects the target when
// it is one too many.
func (t *Target) failed(now int64, ejectNow bool, status int, err error) {
	o := &t.opts.Outlier
	n := t.consec.Add(1)
	if !ejectNow && (o.ConsecutiveFailures <= 0 || int(n) < o.ConsecutiveFailures) {
		return
	}
	why := "answered " + strconv.Itoa(status)
	if err != nil {
		why = err.Error()
	}
	if !ejectNow {
		why = strconv.Itoa(int(n)) + " failures in a row, the last: " + why
	}
	t.eject(now, why)
}

// cost is what peak EWMA minimises: the expected wait for an answer (the
// latency estimate, or the mean age of the requests waiting for one when
// that is longer, so a target that stopped answering gets costlier every
// moment rather than only when a request times out) times the requests it
// has in flight plus one.
func (t *Target) cost(now int64) float64 {
	l := &t.lat
	l.mu.Lock()
	est := l.decayed(now)
	if l.waiting > 0 {
		if age := float64(now - l.waitSum/l.waiting); age > est {
			est = age
		}
	}
	l.mu.Unlock()
	return est * float64(t.inflight.Load()+1)
}

// Latency is the target's current latency estimate (peak EWMA).
func (t *Target) Latency() time.Duration {
	t.lat.mu.Lock()
	defer t.lat.mu.Unlock()
	return time.Duration(t.lat.decayed(nanotime()))
}

// eject takes the target out of its pool's rotation, unless the pool's
// MaxEjectedPercent is reached, and moves the requests waiting on it that
// may move.
func (t *Target) eject(now int64, why string) {
	o := &t.opts.Outlier
	if o.MaxEjectedPercent <= 0 {
		return
	}
	if p := t.pool.Load(); p != nil {
		p.ejectMu.Lock()
		defer p.ejectMu.Unlock()
		if !p.mayEject(t, now) {
			return
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ejectedAt(now) {
		return
	}
	if now-t.lastEjectEnd > int64(o.MaxEjection) {
		t.ejectRun = 0
	}
	d := o.BaseEjection
	for i := 0; i < t.ejectRun && d < o.MaxEjection; i++ {
		d *= 2
	}
	d = min(d, o.MaxEjection)
	t.ejectRun++
	t.lastEjectEnd = now + int64(d)
	t.ejectUntil.Store(now + int64(d))
	t.ejections.Add(1)
	t.consec.Store(0)
	t.lastErr = "ejected for " + d.String() + ": " + why
	t.changed = time.Now()
	t.wakeMovable()
}

// ejectedAt reports whether the target is ejected at now.
func (t *Target) ejectedAt(now int64) bool {
	until := t.ejectUntil.Load()
	if until == 0 {
		return false
	}
	if now < until {
		return true
	}
	// Ended: later checks need no clock comparison. A new ejection in the
	// meantime changed the value and keeps it.
	t.ejectUntil.CompareAndSwap(until, 0)
	return false
}

// Ejected reports whether outlier detection keeps the target out now.
func (t *Target) Ejected() bool { return t.ejectedAt(nanotime()) }

// Healthy reports whether the target takes new requests: up and not
// ejected.
func (t *Target) Healthy() bool { return t.healthyAt(nanotime()) }

func (t *Target) healthyAt(now int64) bool { return t.State() == Up && !t.ejectedAt(now) }

// Ejections is how many times the target was ejected.
func (t *Target) Ejections() uint64 { return t.ejections.Load() }

// mayEject reports whether t may be ejected without more than
// MaxEjectedPercent of the pool (and never every target) being ejected.
// The caller holds p.ejectMu.
func (p *Pool) mayEject(t *Target, now int64) bool {
	ts := p.Targets()
	if len(ts) < 2 {
		return false
	}
	allowed := len(ts) * t.opts.Outlier.MaxEjectedPercent / 100
	allowed = min(max(allowed, 1), len(ts)-1)
	ejected := 0
	for _, o := range ts {
		if o != t && o.ejectedAt(now) {
			ejected++
		}
	}
	return ejected < allowed
}
