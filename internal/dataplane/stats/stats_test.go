package stats

import (
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

func outcome(svc *route.Service, p *upstream.Pool, t *upstream.Target, status int, d time.Duration) *proxy.Outcome {
	return &proxy.Outcome{Service: svc, Pool: p, Target: t, Status: status, UpstreamStatus: status,
		Start: time.Now().Add(-d), Duration: d, Attempts: 1}
}

// TestCountsAndWindow: cumulative counts by class and code, and a window
// summary with requests, errors and percentiles within the window's
// resolution.
func TestCountsAndWindow(t *testing.T) {
	s := New()
	svc := route.NewService("web")
	p := upstream.NewPool("blue", upstream.RoundRobin)
	tgt := upstream.NewTarget(upstream.TargetOptions{Addr: "127.0.0.1:1", Initial: upstream.Up})
	// 98 fast answers, one 500 and one slow one.
	for i := 0; i < 98; i++ {
		s.Observe(outcome(svc, p, tgt, 200, 2*time.Millisecond))
	}
	s.Observe(outcome(svc, p, tgt, 500, 2*time.Millisecond))
	s.Observe(outcome(svc, p, tgt, 200, 400*time.Millisecond))
	// The proxy's own 502 after a failed connect, and a client that left.
	bad := outcome(svc, p, nil, 502, time.Millisecond)
	bad.Local, bad.Failure = true, proxy.FailConnect
	bad.Failed = []proxy.AttemptFailure{{Target: tgt, Reason: proxy.FailConnect}}
	s.Observe(bad)
	gone := outcome(svc, p, tgt, proxy.StatusClientClosed, 30*time.Second)
	gone.Local, gone.Failure = true, proxy.FailClientGone
	s.Observe(gone)

	ser := s.Pool("web", "blue")
	c := ser.Counts()
	if c.Total() != 102 {
		t.Fatalf("total %d, want 102", c.Total())
	}
	want := map[string]uint64{"2xx/": 99, "5xx/": 1, "5xx/502": 1, "4xx/499": 1}
	for _, cc := range c.ByCode {
		if want[cc.Class+"/"+cc.Code] != cc.N {
			t.Errorf("%s/%s = %d, want %d", cc.Class, cc.Code, cc.N, want[cc.Class+"/"+cc.Code])
		}
	}
	if c.Failures["connect"] != 1 || c.Failures["client_gone"] != 1 {
		t.Errorf("failures %v", c.Failures)
	}
	if n := s.Target("web", "blue", "127.0.0.1:1").Counts().AttemptFailures["connect"]; n != 1 {
		t.Errorf("attempt failures on the target: %d, want 1", n)
	}
	var timed uint64
	for _, n := range c.Buckets {
		timed += n
	}
	if timed != 101 {
		t.Errorf("histogram counts %d requests, want 101 (the one whose client left is not timed)", timed)
	}

	sum := ser.Last(10 * time.Second)
	if sum.Requests != 102 || sum.Errors != 2 {
		t.Fatalf("window: %d requests, %d errors; want 102 and 2 (the 500 and the 502, not the client that left)", sum.Requests, sum.Errors)
	}
	if sum.P50 < 2*time.Millisecond || sum.P50 > 2400*time.Microsecond {
		t.Errorf("p50 %v, want 2ms within 20%%", sum.P50)
	}
	if sum.P99 < 2*time.Millisecond || sum.P99 > 480*time.Millisecond {
		t.Errorf("p99 %v out of range", sum.P99)
	}
	if r := sum.ErrorRate(); r < 0.019 || r > 0.02 {
		t.Errorf("error rate %v, want 2/102", r)
	}
}

// TestWindowForgetsOldSeconds: a slot reused for a later second starts
// from zero, and a summary ignores seconds outside its span.
func TestWindowForgetsOldSeconds(t *testing.T) {
	var w window
	now := time.Now().Unix()
	old := now - WindowSlots // the same slot as now
	w.add(old, true, true, time.Millisecond)
	w.add(now, false, true, time.Millisecond)
	got := w.summary(time.Unix(now-5, 0), time.Unix(now, 0), time.Unix(now, 0))
	if got.Requests != 1 || got.Errors != 0 {
		t.Fatalf("after the slot moved on: %d requests %d errors, want 1 and 0", got.Requests, got.Errors)
	}
	if got := w.summary(time.Unix(now-100, 0), time.Unix(now-1, 0), time.Unix(now, 0)); got.Requests != 0 {
		t.Fatalf("a span with no requests counts %d", got.Requests)
	}
}

func TestObserveAllocatesNothing(t *testing.T) {
	s := New()
	svc := route.NewService("web")
	p := upstream.NewPool("blue", upstream.RoundRobin)
	tgt := upstream.NewTarget(upstream.TargetOptions{Addr: "127.0.0.1:1", Initial: upstream.Up})
	o := outcome(svc, p, tgt, 200, time.Millisecond)
	s.Observe(o)
	if n := testing.AllocsPerRun(1000, func() { s.Observe(o) }); n != 0 {
		t.Fatalf("Observe allocates %v times", n)
	}
}
