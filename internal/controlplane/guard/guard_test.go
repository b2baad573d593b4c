package guard

import (
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/stats"
)

func summary(requests, errors uint64, p99 time.Duration) stats.Summary {
	return stats.Summary{Requests: requests, Errors: errors, P50: p99 / 2, P99: p99}
}

func TestJudge(t *testing.T) {
	base := summary(1000, 2, 10*time.Millisecond) // 0.2% errors
	cases := []struct {
		name   string
		s      Settings
		cur    stats.Summary
		judged bool
		breach string
	}{
		{"too few requests", Settings{Window: time.Minute}, summary(10, 10, time.Second), false, ""},
		{"healthy", Settings{Window: time.Minute}, summary(500, 3, 12*time.Millisecond), true, ""},
		{"errors above old rate plus a point", Settings{Window: time.Minute}, summary(500, 25, 12*time.Millisecond), true, "error rate 5.00%"},
		{"absolute error limit", Settings{Window: time.Minute, MaxErrorRate: 0.10}, summary(500, 25, 12*time.Millisecond), true, ""},
		{"slow", Settings{Window: time.Minute}, summary(500, 0, 25*time.Millisecond), true, "p99 latency"},
		{"slow within a wider ratio", Settings{Window: time.Minute, MaxLatencyRatio: 3}, summary(500, 0, 25*time.Millisecond), true, ""},
		{"min requests", Settings{Window: time.Minute, MinRequests: 1000}, summary(500, 25, 12*time.Millisecond), false, ""},
	}
	for _, c := range cases {
		v := New(c.s, base).Judge(c.cur)
		if v.Judged != c.judged || (c.breach == "") != (v.Breach == "") || !strings.Contains(v.Breach, c.breach) {
			t.Errorf("%s: judged %v breach %q; want judged %v breach containing %q", c.name, v.Judged, v.Breach, c.judged, c.breach)
		}
	}
	// An old pool with no traffic gives no latency to compare with; errors
	// are still judged against the margin.
	v := New(Settings{Window: time.Minute}, stats.Summary{}).Judge(summary(500, 0, time.Second))
	if v.Breach != "" {
		t.Errorf("no baseline latency, yet breach %q", v.Breach)
	}
	if v := New(Settings{Window: time.Minute}, stats.Summary{}).Judge(summary(500, 10, time.Millisecond)); !strings.Contains(v.Breach, "error rate 2.00%") {
		t.Errorf("2%% errors with no baseline: breach %q, want one", v.Breach)
	}
}

func TestSettingsValidate(t *testing.T) {
	for _, s := range []Settings{{}, {Window: time.Minute, MaxErrorRate: 1.5}, {Window: time.Minute, MaxLatencyRatio: 0.5}} {
		if s.Validate() == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	if err := (Settings{Window: time.Minute, MaxErrorRate: 0.01, MaxLatencyRatio: 2}).Validate(); err != nil {
		t.Error(err)
	}
}
