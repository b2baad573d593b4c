package upstream

import (
	"errors"
	"testing"
)

func TestNewTargetDefaults(t *testing.T) {
	tg := NewTarget(TargetOptions{Addr: "127.0.0.1:9001"})
	if tg.Addr() != "127.0.0.1:9001" || tg.Label() != "127.0.0.1:9001" {
		t.Fatalf("addr %q label %q, want the address for both", tg.Addr(), tg.Label())
	}
	if tg.State() != Unknown {
		t.Fatalf("state = %v, want unknown", tg.State())
	}
	if tg.opts == nil || tg.opts.MaxIdle != DefaultConnOptions().MaxIdle {
		t.Fatal("a target without connection options does not get the defaults")
	}
	if s := NewTarget(TargetOptions{Addr: "a", Label: "web-1", Initial: Up}); s.Label() != "web-1" || s.State() != Up {
		t.Fatalf("label %q state %v, want web-1 up", s.Label(), s.State())
	}
	for s, want := range map[State]string{Unknown: "unknown", Up: "up", Down: "down"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}

func TestReportProbeThresholds(t *testing.T) {
	th := Thresholds{Healthy: 2, Unhealthy: 3}
	tg := NewTarget(TargetOptions{Addr: "a"})
	fail := errors.New("GET /healthz: status 503")
	steps := []struct {
		err  error
		want State
	}{
		{nil, Unknown}, // 1 pass of 2
		{nil, Up},
		{fail, Up}, // 1 failure of 3
		{fail, Up},
		{nil, Up}, // a pass resets the failure run
		{fail, Up},
		{fail, Up},
		{fail, Down},
		{fail, Down},
		{nil, Down}, // 1 pass of 2
		{fail, Down},
		{nil, Down}, // the failure reset the pass run
		{nil, Up},
	}
	for i, s := range steps {
		if got := tg.ReportProbe(s.err, th); got != s.want || tg.State() != s.want {
			t.Fatalf("step %d (err %v): verdict %v, state %v; want %v", i, s.err, got, tg.State(), s.want)
		}
	}
	if tg.ConsecutivePasses() != 2 {
		t.Fatalf("consecutive passes = %d, want 2", tg.ConsecutivePasses())
	}

	// Unknown goes Down after the unhealthy threshold, without having been Up.
	u := NewTarget(TargetOptions{Addr: "b"})
	u.ReportProbe(fail, th)
	u.ReportProbe(fail, th)
	if u.State() != Unknown {
		t.Fatalf("state after 2 of 3 failures = %v, want unknown", u.State())
	}
	if u.ReportProbe(fail, th) != Down {
		t.Fatalf("state after 3 failures = %v, want down", u.State())
	}
}

func TestReportProbeLastError(t *testing.T) {
	tg := NewTarget(TargetOptions{Addr: "a"})
	th := Thresholds{Healthy: 1, Unhealthy: 1}
	tg.ReportProbe(errors.New("timeout after 2s"), th)
	if tg.LastError() != "timeout after 2s" {
		t.Fatalf("last error = %q", tg.LastError())
	}
	st := tg.Status()
	if st.State != "down" || st.LastError != "timeout after 2s" || st.LastProbe.IsZero() {
		t.Fatalf("status = %+v", st)
	}
	tg.ReportProbe(nil, th)
	if tg.LastError() != "" || tg.State() != Up {
		t.Fatalf("after a pass: last error %q, state %v; want none, up", tg.LastError(), tg.State())
	}
	if st2 := tg.Status(); !st2.Since.After(st.Since) && !st2.Since.Equal(st.Since) {
		t.Fatalf("since went back: %v then %v", st.Since, st2.Since)
	}
}

func TestReportFailure(t *testing.T) {
	th := Thresholds{Healthy: 2, Unhealthy: 3}
	tg := NewTarget(TargetOptions{Addr: "a", Initial: Up})
	tg.ReportProbe(nil, th)
	tg.ReportFailure(errors.New("dial tcp a: connection refused"))
	if tg.State() != Down {
		t.Fatalf("state after a failed connection = %v, want down at once", tg.State())
	}
	if tg.ConsecutivePasses() != 0 {
		t.Fatalf("passes = %d after a failure, want 0", tg.ConsecutivePasses())
	}
	if st := tg.Status(); st.Failures != 1 || st.LastError != "dial tcp a: connection refused" {
		t.Fatalf("status = %+v, want 1 failure and the error", st)
	}
	// Active checks bring it back after the healthy threshold.
	if tg.ReportProbe(nil, th) != Down {
		t.Fatal("one pass brought a target back; the threshold is 2")
	}
	if tg.ReportProbe(nil, th) != Up {
		t.Fatal("two passes did not bring the target back")
	}
	tg.ReportFailure(errors.New("again"))
	tg.ReportFailure(errors.New("again"))
	if st := tg.Status(); st.Failures != 3 || st.State != "down" {
		t.Fatalf("status = %+v, want 3 failures, down", st)
	}
}

func TestResetVerdict(t *testing.T) {
	th := Thresholds{Healthy: 2, Unhealthy: 2}
	tg := NewTarget(TargetOptions{Addr: "a"})
	tg.ReportProbe(nil, th)
	tg.ResetVerdict()
	if tg.ConsecutivePasses() != 0 {
		t.Fatalf("passes after reset = %d", tg.ConsecutivePasses())
	}
	if tg.ReportProbe(nil, th) != Unknown {
		t.Fatal("a pass before the reset counted after it")
	}
	if tg.ReportProbe(nil, th) != Up {
		t.Fatal("two passes after the reset did not make the target up")
	}
	tg.ReportProbe(errors.New("x"), th)
	tg.ResetVerdict()
	if tg.ReportProbe(errors.New("x"), th) != Up {
		t.Fatal("a failure before the reset counted after it")
	}
	if tg.ReportProbe(errors.New("x"), th) != Down {
		t.Fatal("two failures after the reset did not make the target down")
	}
}

func TestTargetCounters(t *testing.T) {
	tg := NewTarget(TargetOptions{Addr: "a", Initial: Up})
	tg.Begin()
	tg.Begin()
	tg.Begin()
	tg.End(true)
	tg.End(false) // failed: not served
	if tg.InFlight() != 1 || tg.Served() != 1 {
		t.Fatalf("in flight %d served %d, want 1, 1", tg.InFlight(), tg.Served())
	}
	if st := tg.Status(); st.InFlight != 1 || st.Served != 1 || st.State != "up" || st.Addr != "a" || st.Label != "a" {
		t.Fatalf("status = %+v", st)
	}
}
