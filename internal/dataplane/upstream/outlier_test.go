package upstream

import (
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// outlierPool is newPool with the given outlier options on every target.
func outlierPool(b Balance, o OutlierOptions, n int) (*Pool, []*Target) {
	p := NewPool("blue", b)
	specs := make([]TargetSpec, n)
	for i := range specs {
		specs[i] = TargetSpec{Addr: "a" + string(rune('0'+i))}
	}
	co := DefaultConnOptions()
	co.Outlier = o
	p.SetTargets(specs, func(s TargetSpec) *Target {
		return NewTarget(TargetOptions{Addr: s.Addr, Initial: Up, Conn: co})
	})
	return p, p.Targets()
}

var testOutlier = OutlierOptions{ConsecutiveFailures: 3, BaseEjection: 10 * time.Second, MaxEjection: 40 * time.Second, MaxEjectedPercent: 50}

// ejectedFor is how long the target's current ejection lasts from now.
func ejectedFor(tg *Target, now int64) time.Duration {
	u := tg.ejectUntil.Load()
	if u == 0 {
		return 0
	}
	return time.Duration(u - now)
}

func TestConsecutiveFailuresEjectAndASuccessResets(t *testing.T) {
	for _, b := range []Balance{RoundRobin, LeastConn, PeakEWMA} {
		t.Run(b.String(), func(t *testing.T) {
			p, ts := outlierPool(b, testOutlier, 3)
			bad := ts[1]
			start := time.Now()
			answer := func(status int) {
				bad.Await(start)
				bad.Answered(start, start.Add(time.Millisecond), status)
			}
			answer(503)
			answer(502)
			answer(200) // resets the run
			answer(500)
			answer(500)
			if bad.Ejected() {
				t.Fatal("ejected after 2 failures in a row, want 3")
			}
			answer(504)
			if !bad.Ejected() || bad.Ejections() != 1 {
				t.Fatalf("not ejected after 3 failures in a row (ejections %d)", bad.Ejections())
			}
			if !strings.Contains(bad.LastError(), "3 failures in a row") {
				t.Errorf("last error %q does not say why", bad.LastError())
			}
			got := countPicks(p, 300, nil)
			if got[bad.Addr()] != 0 || got[ts[0].Addr()] == 0 || got[ts[2].Addr()] == 0 {
				t.Errorf("picks with a1 ejected: %v, want none for a1 and some for the others", got)
			}
			if p.HasOther(nil, ts[0]) != true || p.HasOther([]*Target{ts[2]}, ts[0]) {
				t.Error("HasOther counts the ejected target as healthy")
			}
		})
	}
}

func TestEjectionDoublesCapsAndResets(t *testing.T) {
	_, ts := outlierPool(RoundRobin, testOutlier, 4)
	tg := ts[0]
	now := nanotime()
	var got []time.Duration
	for range 4 {
		tg.failed(now, true, 0, os.ErrDeadlineExceeded)
		d := ejectedFor(tg, now)
		got = append(got, d)
		if !tg.ejectedAt(now+int64(d)-1) || tg.ejectedAt(now+int64(d)) {
			t.Fatalf("ejection of %v does not end at its end", d)
		}
		now += int64(d) + int64(time.Second)
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 40 * time.Second}
	if !slices.Equal(got, want) {
		t.Errorf("ejection intervals %v, want %v", got, want)
	}
	// Longer than MaxEjection without an ejection: back to the base.
	now += int64(testOutlier.MaxEjection) + 1
	tg.failed(now, true, 0, os.ErrDeadlineExceeded)
	if d := ejectedFor(tg, now); d != testOutlier.BaseEjection {
		t.Errorf("after a quiet spell the ejection is %v, want %v", d, testOutlier.BaseEjection)
	}
}

func TestMaxEjectedPercentKeepsTargets(t *testing.T) {
	timeout := os.ErrDeadlineExceeded
	for _, c := range []struct {
		targets, pct, want int
	}{
		{1, 50, 0},   // a pool of one is never ejected
		{2, 50, 1},   // never all
		{2, 100, 1},  // never all, whatever the percentage
		{4, 50, 2},   //
		{10, 10, 1},  //
		{3, 10, 1},   // at least one may go
		{4, 0, 0},    // 0 turns ejection off
		{5, 100, 4},  //
		{10, 35, 3},  //
		{7, 50, 3},   //
		{20, 50, 10}, //
	} {
		o := testOutlier
		o.MaxEjectedPercent = c.pct
		p, ts := outlierPool(PeakEWMA, o, c.targets)
		now := nanotime()
		for _, tg := range ts {
			tg.failed(now, true, 0, timeout)
		}
		n := 0
		for _, tg := range ts {
			if tg.ejectedAt(now) {
				n++
			}
		}
		if n != c.want {
			t.Errorf("%d targets, max %d%%: %d ejected, want %d", c.targets, c.pct, n, c.want)
		}
		if p.Pick(nil) == nil {
			t.Errorf("%d targets, max %d%%: Pick found none", c.targets, c.pct)
		}
	}
}

func TestFailureKinds(t *testing.T) {
	o := testOutlier
	_, ts := outlierPool(RoundRobin, o, 3)
	tg := ts[0]
	now := time.Now()
	fail := func(f Failure) {
		tg.Begin()
		tg.Await(now)
		tg.Failed(now, now, f, errors.New("boom"))
		tg.End(false)
	}
	for range 10 {
		fail(NotTargetFault)
	}
	if tg.Ejected() || tg.State() != Up {
		t.Fatal("failures that are not the target's ejected it or marked it down")
	}
	fail(TryTimeout)
	fail(TryTimeout)
	if tg.Ejected() {
		t.Fatal("ejected after 2 try timeouts, want 3 in a row")
	}
	fail(TryTimeout)
	if !tg.Ejected() {
		t.Fatal("3 try timeouts in a row did not eject")
	}
	tg2 := ts[1]
	tg2.Await(now)
	tg2.Failed(now, now, ResponseTimeout, os.ErrDeadlineExceeded)
	if tg2.Ejected() {
		t.Fatal("a second target of three ejected: more than 50%")
	}
	tg3 := ts[2]
	tg3.Await(now)
	tg3.Failed(now, now, ConnectFailed, errors.New("refused"))
	if tg3.State() != Down {
		t.Error("a failed connection did not mark the target down")
	}
	if tg.InFlight() != 0 || tg.lat.waiting != 0 || tg2.lat.waiting != 0 || tg3.lat.waiting != 0 {
		t.Error("attempt accounting did not return to zero")
	}
}

// observe records one answered attempt of the given latency, ending now.
func observe(tg *Target, rtt time.Duration) {
	now := time.Now()
	tg.Await(now.Add(-rtt))
	tg.Answered(now.Add(-rtt), now, 200)
}

func TestPeakEWMAPrefersFastTargets(t *testing.T) {
	p, ts := outlierPool(PeakEWMA, testOutlier, 2)
	fast, slow := ts[0], ts[1]
	for range 5 {
		observe(fast, time.Millisecond)
		observe(slow, 2*time.Second)
	}
	got := countPicks(p, 100, nil)
	if got[slow.Addr()] != 0 {
		t.Errorf("picks %v: the 2s target was picked over the 1ms one", got)
	}
	// Load counts: with enough requests in flight, the fast target costs
	// more than the slow one (1ms × 3001 > 2s × 1).
	for range 3000 {
		fast.Begin()
	}
	if tg := p.Pick(nil); tg != slow {
		t.Errorf("with 3000 requests in flight on the fast target, Pick chose %v", tg.Addr())
	}
	for range 3000 {
		fast.End(true)
	}
	// A peak fades: the slow target's estimate decays toward what it
	// answers now.
	before := slow.Latency()
	observe(slow, time.Millisecond)
	if l := slow.Latency(); l > before || l < time.Millisecond {
		t.Errorf("estimate %v after %v then a 1ms answer", l, before)
	}
	observe(slow, 3*time.Second)
	if l := slow.Latency(); l < 2900*time.Millisecond {
		t.Errorf("a 3s answer left the estimate at %v: the peak must count at once", l)
	}
}

func TestPeakEWMAAvoidsTargetWithRequestsStuck(t *testing.T) {
	p, ts := outlierPool(PeakEWMA, testOutlier, 3)
	for _, tg := range ts {
		observe(tg, time.Millisecond)
	}
	// a1 answered as fast as the others, but a request has waited on it
	// for 5s: it is hung now, whatever its history says.
	hung := ts[1]
	hung.Begin()
	hung.Await(time.Now().Add(-5 * time.Second))
	got := countPicks(p, 200, nil)
	if got[hung.Addr()] != 0 || got[ts[0].Addr()]+got[ts[2].Addr()] != 200 {
		t.Errorf("picks %v: want none on a1 (a request stuck for 5s)", got)
	}
}

func TestPeakEWMAFreshTargetsShare(t *testing.T) {
	p, ts := outlierPool(PeakEWMA, testOutlier, 3)
	got := countPicks(p, 300, nil)
	for _, tg := range ts {
		if got[tg.Addr()] != 100 {
			t.Errorf("picks of fresh targets %v: want 100 each", got)
			break
		}
	}
}

// A request waiting on a connection whose target goes down or is ejected
// is woken (its read ends at once) when another target can take it.
func TestWaitCutShortWhenTargetGoesDown(t *testing.T) {
	for _, how := range []string{"down", "ejected"} {
		t.Run(how, func(t *testing.T) {
			b := newBackend(t) // accepts, never answers
			p := NewPool("blue", RoundRobin)
			co := DefaultConnOptions()
			p.SetTargets([]TargetSpec{{Addr: b.addr}, {Addr: "127.0.0.1:1"}}, func(s TargetSpec) *Target {
				return NewTarget(TargetOptions{Addr: s.Addr, Initial: Up, Conn: co})
			})
			tg := p.Targets()[0]
			c, err := tg.Get(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Discard(c)
			c.SetReadDeadline(time.Now().Add(time.Minute))
			c.AwaitMovable()
			done := make(chan error, 1)
			go func() {
				_, err := c.R.ReadHead(nil)
				done <- err
			}()
			select {
			case err := <-done:
				t.Fatalf("the read ended before the target went down: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			if how == "down" {
				tg.ReportFailure(errors.New("probe failed"))
			} else {
				tg.failed(nanotime(), true, 0, os.ErrDeadlineExceeded)
			}
			select {
			case err := <-done:
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("read ended with %v, want the deadline it was cut short by", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the read still waits 10s after its target went " + how)
			}
			if c.Settle() {
				t.Error("Settle reports the wait was not cut short")
			}
		})
	}
}

// A wait that must not move (AwaitMovable not called), or with nowhere to
// go, is left alone.
func TestWaitNotCutShortWhenItMustStay(t *testing.T) {
	b := newBackend(t)
	p := NewPool("blue", RoundRobin)
	p.SetTargets([]TargetSpec{{Addr: b.addr}}, func(s TargetSpec) *Target {
		return NewTarget(TargetOptions{Addr: s.Addr, Initial: Up})
	})
	tg := p.Targets()[0]
	c, err := tg.Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Discard(c)
	c.AwaitMovable()
	tg.ReportFailure(errors.New("probe failed")) // no other target: stays
	if !c.Settle() {
		t.Error("a wait with no other target to go to was cut short")
	}
}
