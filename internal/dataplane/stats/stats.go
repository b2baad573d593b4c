// Package stats counts what the data plane served, per service, pool and
// target, from the request life cycle's outcomes (it is a proxy.Observer).
// It keeps two kinds of numbers:
//
//   - cumulative counters (requests by status, a latency histogram,
//     retries, failures and failed attempts by reason), which the metrics
//     endpoint exposes in the Prometheus format;
//   - a sliding window of one-second slots over the last few minutes
//     (requests, errors, a fine latency histogram), from which the
//     dashboard draws requests per second, error rate and p50/p99, and a
//     deploy's guard compares a new pool with the one it replaces.
//
// Why counters of its own rather than the Prometheus client's vectors on
// the request path: a CounterVec/HistogramVec lookup hashes its label
// values and takes a lock per family per request, and a request touches
// five families; here a request costs three map lookups (service, pool,
// target, in copy-on-write maps read without a lock) and a few atomic
// adds, and allocates nothing. The Prometheus client still does the
// exposition (package metrics turns these counters into const metrics at
// scrape time).
package stats

import (
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutover/cutover/internal/dataplane/proxy"
)

// Buckets are the latency histogram's upper bounds in seconds, as the
// metrics endpoint exposes them (Prometheus's defaults, widened to 30 s
// for slow targets).
var Buckets = [...]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// The window's latency resolution: bucket i holds latencies up to
// fineBase·fineFactor^i, from 0.25 ms to a minute in 20% steps, so a p99
// read from it is within 20% of the true value (a guard judges latency by
// ratios of 2 and more). A slot is 284 bytes, a window 85 kB.
const (
	fineBase    = 250 * time.Microsecond
	fineFactor  = 1.2
	fineBuckets = 68
)

// WindowSlots is how many one-second slots the window keeps: the span a
// summary can look back over.
const WindowSlots = 300

// Status codes of the proxy's own answers that are counted each on its
// own; other codes are counted by class.
var localCodes = [...]int{308, 400, 404, 408, 413, 431, 499, 502, 503, 504}

const (
	nClasses = 5 // 1xx .. 5xx
	nCodes   = nClasses + len(localCodes) + 1
	// otherLocal counts proxy answers with a code not in localCodes.
	otherLocal = nCodes - 1
)

// nFailures bounds the failure kinds; proxy.Failure values index arrays.
const nFailures = 16

// Series is the numbers of one service's pool, or of one target of it.
type Series struct {
	Service, Pool, Target string

	codes    [nCodes]atomic.Uint64
	hist     [len(Buckets) + 1]atomic.Uint64
	sumNanos atomic.Uint64
	retries  atomic.Uint64
	failures [nFailures]atomic.Uint64
	// attemptFailures counts failed tries on this target, by reason.
	attemptFailures [nFailures]atomic.Uint64

	win window

	// A pool's series holds its targets' series.
	tmu     sync.Mutex
	targets atomic.Pointer[map[string]*Series]
}

// Stats is the set of series. The zero value is not usable; use New.
type Stats struct {
	mu  sync.Mutex
	idx atomic.Pointer[map[string]map[string]*Series] // service → pool → series
	now func() time.Time
}

// New returns an empty Stats.
func New() *Stats {
	s := &Stats{now: time.Now}
	m := map[string]map[string]*Series{}
	s.idx.Store(&m)
	return s
}

// Observe counts a finished request. It is a proxy.Observer.
func (s *Stats) Observe(o *proxy.Outcome) {
	svc, pool := "", ""
	if o.Service != nil {
		svc = o.Service.Name()
	}
	if o.Pool != nil {
		pool = o.Pool.Name()
	}
	ps := s.series(svc, pool)
	end := o.Start.Add(o.Duration).Unix()
	isErr := isError(o)
	// A client that left says nothing about how fast the target was.
	timed := o.Failure != proxy.FailClientGone
	ps.count(o, end, isErr, timed)
	if o.Target != nil {
		ps.target(o.Target.Addr()).count(o, end, isErr, timed)
	}
	for _, f := range o.Failed {
		if int(f.Reason) < nFailures {
			ps.target(f.Target.Addr()).attemptFailures[f.Reason].Add(1)
		}
	}
}

// isError reports whether a request counts against the pool that served
// it: a 5xx from the target, a failure of the pool or target, or a try
// that failed on the way (even if another target then answered).
func isError(o *proxy.Outcome) bool {
	return o.Failure.Upstream() || (!o.Local && o.Status >= 500) || len(o.Failed) > 0
}

func (ser *Series) count(o *proxy.Outcome, sec int64, isErr, timed bool) {
	ser.codes[codeIndex(o.Status, o.Local)].Add(1)
	if o.Attempts > 1 {
		ser.retries.Add(uint64(o.Attempts - 1))
	}
	if o.Failure != proxy.FailNone && int(o.Failure) < nFailures {
		ser.failures[o.Failure].Add(1)
	}
	d := o.Duration
	if timed {
		ser.hist[histIndex(d)].Add(1)
		ser.sumNanos.Add(uint64(max(d, 0)))
	}
	ser.win.add(sec, isErr, timed, d)
}

func codeIndex(status int, local bool) int {
	if local {
		for i, c := range localCodes {
			if c == status {
				return nClasses + i
			}
		}
		return otherLocal
	}
	if status >= 100 && status < 600 {
		return status/100 - 1
	}
	return otherLocal
}

func histIndex(d time.Duration) int {
	s := d.Seconds()
	for i, b := range Buckets {
		if s <= b {
			return i
		}
	}
	return len(Buckets)
}

// series returns the series of a service's pool, making it on first use.
func (s *Stats) series(svc, pool string) *Series {
	if ser := (*s.idx.Load())[svc][pool]; ser != nil {
		return ser
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.idx.Load()
	if ser := old[svc][pool]; ser != nil {
		return ser
	}
	ser := &Series{Service: svc, Pool: pool}
	empty := map[string]*Series{}
	ser.targets.Store(&empty)
	next := make(map[string]map[string]*Series, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	pools := make(map[string]*Series, len(old[svc])+1)
	for k, v := range old[svc] {
		pools[k] = v
	}
	pools[pool] = ser
	next[svc] = pools
	s.idx.Store(&next)
	return ser
}

// target returns a pool series' series of one target.
func (ser *Series) target(addr string) *Series {
	if t := (*ser.targets.Load())[addr]; t != nil {
		return t
	}
	ser.tmu.Lock()
	defer ser.tmu.Unlock()
	old := *ser.targets.Load()
	if t := old[addr]; t != nil {
		return t
	}
	t := &Series{Service: ser.Service, Pool: ser.Pool, Target: addr}
	empty := map[string]*Series{}
	t.targets.Store(&empty)
	next := make(map[string]*Series, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[addr] = t
	ser.targets.Store(&next)
	return t
}

// Pool returns the series of a service's pool, or nil when it served no
// request yet.
func (s *Stats) Pool(svc, pool string) *Series { return (*s.idx.Load())[svc][pool] }

// Target returns the series of a pool's target, or nil.
func (s *Stats) Target(svc, pool, addr string) *Series {
	ps := s.Pool(svc, pool)
	if ps == nil {
		return nil
	}
	return (*ps.targets.Load())[addr]
}

// Each calls f for every pool series, in a stable order, and fn for each
// of its target series.
func (s *Stats) Each(pool func(*Series), target func(*Series)) {
	idx := *s.idx.Load()
	for _, svc := range slices.Sorted(maps.Keys(idx)) {
		for _, p := range slices.Sorted(maps.Keys(idx[svc])) {
			ps := idx[svc][p]
			pool(ps)
			if target == nil {
				continue
			}
			ts := *ps.targets.Load()
			for _, a := range slices.Sorted(maps.Keys(ts)) {
				target(ts[a])
			}
		}
	}
}

// Counts are a series' cumulative counters.
type Counts struct {
	// ByCode counts requests by the class of the target's status ("2xx")
	// or, for the proxy's own answers, by the exact code ("502").
	ByCode []CodeCount
	// Buckets counts durations up to each of Buckets (not cumulative);
	// the last entry counts those above. Sum is their total.
	Buckets         [len(Buckets) + 1]uint64
	Sum             time.Duration
	Retries         uint64
	Failures        map[string]uint64 // by proxy.Failure name
	AttemptFailures map[string]uint64 // failed tries on this target, by reason
}

// CodeCount is one status class or code and its count.
type CodeCount struct {
	Class string // "2xx"
	Code  string // exact code for the proxy's own answers; "" for a target's
	Local bool
	N     uint64
}

// Total is the number of requests counted.
func (c Counts) Total() uint64 {
	var n uint64
	for _, cc := range c.ByCode {
		n += cc.N
	}
	return n
}

// Counts returns the series' cumulative counters.
func (ser *Series) Counts() Counts {
	var c Counts
	for i := range ser.codes {
		n := ser.codes[i].Load()
		if n == 0 {
			continue
		}
		var cc CodeCount
		switch {
		case i < nClasses:
			cc = CodeCount{Class: string(rune('1'+i)) + "xx"}
		case i == otherLocal:
			cc = CodeCount{Class: "other", Code: "other", Local: true}
		default:
			code := localCodes[i-nClasses]
			cc = CodeCount{Class: string(rune('0'+code/100)) + "xx", Code: itoa(code), Local: true}
		}
		cc.N = n
		c.ByCode = append(c.ByCode, cc)
	}
	for i := range ser.hist {
		c.Buckets[i] = ser.hist[i].Load()
	}
	c.Sum = time.Duration(ser.sumNanos.Load())
	c.Retries = ser.retries.Load()
	c.Failures = failureMap(&ser.failures)
	c.AttemptFailures = failureMap(&ser.attemptFailures)
	return c
}

func failureMap(a *[nFailures]atomic.Uint64) map[string]uint64 {
	var m map[string]uint64
	for i := range a {
		if n := a[i].Load(); n > 0 {
			if m == nil {
				m = map[string]uint64{}
			}
			m[proxy.Failure(i).String()] = n
		}
	}
	return m
}

func itoa(n int) string {
	var b [4]byte
	i := len(b)
	for n > 0 || i == len(b) {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// Summary is what a series did over a span of time.
type Summary struct {
	From, To time.Time
	Requests uint64
	Errors   uint64
	// P50 and P99 are latency percentiles over the span's timed requests
	// (those whose client did not leave), to within 10%; 0 with none.
	P50, P99 time.Duration
}

// RPS is requests per second over the span.
func (s Summary) RPS() float64 {
	d := s.To.Sub(s.From).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(s.Requests) / d
}

// ErrorRate is the share of requests that were errors, 0 to 1.
func (s Summary) ErrorRate() float64 {
	if s.Requests == 0 {
		return 0
	}
	return float64(s.Errors) / float64(s.Requests)
}

// Summary sums the seconds from from's to to's, both included, that the
// window still holds (at most WindowSlots seconds back from now).
func (ser *Series) Summary(from, to time.Time) Summary {
	if ser == nil {
		return Summary{From: from, To: to}
	}
	return ser.win.summary(from, to, time.Now())
}

// Last summarises the last d up to now.
func (ser *Series) Last(d time.Duration) Summary {
	now := time.Now()
	return ser.Summary(now.Add(-d), now)
}

// PerSecond returns requests and errors for each of the last n whole
// seconds, oldest first, for charts.
func (ser *Series) PerSecond(n int) (requests, errors []uint64) {
	if ser == nil {
		return make([]uint64, n), make([]uint64, n)
	}
	now := time.Now().Unix()
	requests, errors = make([]uint64, n), make([]uint64, n)
	for i := 0; i < n && i < WindowSlots; i++ {
		sec := now - int64(n-i)
		sl := &ser.win.slots[uint64(sec)%WindowSlots]
		if sl.sec.Load() == sec {
			requests[i], errors[i] = uint64(sl.n.Load()), uint64(sl.errs.Load())
		}
	}
	return requests, errors
}

// window is a ring of one-second slots.
type window struct {
	mu    sync.Mutex // taken only to move a slot on to a new second
	slots [WindowSlots]slot
}

// slot counts one second; 32-bit counters hold any second's requests.
type slot struct {
	sec     atomic.Int64
	n, errs atomic.Uint32
	lat     [fineBuckets + 1]atomic.Uint32
}

func (w *window) add(sec int64, isErr, timed bool, d time.Duration) {
	sl := &w.slots[uint64(sec)%WindowSlots]
	if sl.sec.Load() != sec {
		w.roll(sl, sec)
	}
	sl.n.Add(1)
	if isErr {
		sl.errs.Add(1)
	}
	if timed {
		sl.lat[fineIndex(d)].Add(1)
	}
}

// roll empties a slot that holds an older second for sec. A request of an
// older second that ends in the same instant may be lost or counted in
// the new second; both are within the window's resolution.
func (w *window) roll(sl *slot, sec int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur := sl.sec.Load(); cur >= sec {
		return
	}
	sl.n.Store(0)
	sl.errs.Store(0)
	for i := range sl.lat {
		sl.lat[i].Store(0)
	}
	sl.sec.Store(sec)
}

func fineIndex(d time.Duration) int {
	if d <= fineBase {
		return 0
	}
	i := int(math.Ceil(math.Log(float64(d)/float64(fineBase)) / math.Log(fineFactor)))
	return min(i, fineBuckets)
}

// fineUpper is bucket i's upper bound.
func fineUpper(i int) time.Duration {
	return time.Duration(float64(fineBase) * math.Pow(fineFactor, float64(i)))
}

func (w *window) summary(from, to, now time.Time) Summary {
	sum := Summary{From: from, To: to}
	// The second to falls in is counted too, so a summary up to now
	// includes the requests of the second under way.
	first, last := from.Unix(), to.Unix()
	if oldest := now.Unix() - WindowSlots + 1; first < oldest {
		first = oldest
	}
	var lat [fineBuckets + 1]uint64
	var timed uint64
	for sec := first; sec <= last; sec++ {
		sl := &w.slots[uint64(sec)%WindowSlots]
		if sl.sec.Load() != sec {
			continue
		}
		sum.Requests += uint64(sl.n.Load())
		sum.Errors += uint64(sl.errs.Load())
		for i := range lat {
			n := uint64(sl.lat[i].Load())
			lat[i] += n
			timed += n
		}
	}
	if timed > 0 {
		sum.P50 = percentile(&lat, timed, 0.50)
		sum.P99 = percentile(&lat, timed, 0.99)
	}
	return sum
}

func percentile(lat *[fineBuckets + 1]uint64, total uint64, q float64) time.Duration {
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, n := range lat {
		seen += n
		if seen >= rank {
			return fineUpper(i)
		}
	}
	return fineUpper(fineBuckets)
}
