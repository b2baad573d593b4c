package main

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
)

func TestMedian(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median(3,1,2) = %v; want 2", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median(4,1,3,2) = %v; want 2.5", got)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing: want NaN")
	}
}

func TestSummarizeRatiosToNginx(t *testing.T) {
	run := func(proxy string, logOn bool, rps float64, reqs int64, cpu time.Duration, errs int64) benchRun {
		return benchRun{Proxy: proxy, LogOn: logOn, CPU: cpu, PeakRSSKB: 10000,
			Wrk: wrkResult{ReqPerSec: rps, Requests: reqs, P50: time.Millisecond, P99: 5 * time.Millisecond, Non2xx: errs}}
	}
	runs := []benchRun{
		run("nginx", false, 40000, 600000, 10*time.Second, 0),
		run("cutover", false, 30000, 450000, 10*time.Second, 1),
		run("nginx", false, 44000, 660000, 10*time.Second, 0),
		run("cutover", false, 50000, 750000, 10*time.Second, 2),
		run("nginx", false, 42000, 630000, 10*time.Second, 0),
		run("cutover", false, 42000, 630000, 7*time.Second, 0),
		{Proxy: "haproxy", Err: "did not start"},
		run("nginx", true, 1, 1, time.Second, 0), // other log mode: ignored
	}
	rows := summarize(runs, allProxies, false)
	if len(rows) != 3 {
		t.Fatalf("rows = %+v; want nginx, haproxy, cutover", rows)
	}
	n, h, c := rows[0], rows[1], rows[2]
	if n.Proxy != "nginx" || n.ReqPerSec != 42000 || n.PerCPU != 63000 || n.RatioReqPerSec != 1 || n.RatioPerCPU != 1 {
		t.Errorf("nginx row = %+v", n)
	}
	if h.Runs != 0 || h.Failed != 1 {
		t.Errorf("haproxy row = %+v; want 0 runs, 1 failed", h)
	}
	// cutover: medians 42000 req/s; per CPU-s 45000, 75000, 90000 → 75000.
	if c.ReqPerSec != 42000 || c.PerCPU != 75000 || c.Errors != 3 {
		t.Errorf("cutover row = %+v", c)
	}
	if math.Abs(c.RatioPerCPU-75000.0/63000) > 1e-9 || c.RatioReqPerSec != 1 {
		t.Errorf("cutover ratios = %v, %v", c.RatioReqPerSec, c.RatioPerCPU)
	}
	table := benchTable(rows)
	for _, want := range []string{"| nginx | 42,000 | 1.00 ms | 5.00 ms | 10.0 | 63,000 | 10.2 MB | 1.00 | 1.00 | 0 |", "| haproxy | – |", "1 runs failed", "| cutover | 42,000 |", "| 1.19 | 3 |"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

func TestSummarizeWithoutNginx(t *testing.T) {
	rows := summarize([]benchRun{{Proxy: "cutover", CPU: time.Second, Wrk: wrkResult{ReqPerSec: 5, Requests: 5}}}, allProxies, false)
	if len(rows) != 1 || !math.IsNaN(rows[0].RatioReqPerSec) {
		t.Fatalf("rows = %+v; want one cutover row with no ratio", rows)
	}
	if !strings.Contains(benchTable(rows), "| – | – |") {
		t.Errorf("table without nginx should show – for ratios:\n%s", benchTable(rows))
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 43345.4: "43,345", 1234567.6: "1,234,568", -1234: "-1,234"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q; want %q", in, got, want)
		}
	}
	if thousands(math.NaN()) != "–" {
		t.Error("thousands(NaN): want –")
	}
}

func TestSwitchLatencies(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	rec := func(ms int, backend string) loadclient.Record {
		return loadclient.Record{Sent: time.Duration(ms) * time.Millisecond, Backend: backend, Status: 200}
	}
	recs := []loadclient.Record{
		rec(50, "blue-1"),
		rec(90, "blue-2"),   // before the first switch: not counted
		rec(110, "blue-1"),  // 10ms after switch 1, old pool
		rec(120, "green-1"), // new pool
		rec(230, "blue-2"),  // 130ms after switch 1, old pool: the latency
		{Sent: 240 * time.Millisecond, Err: loadclient.ErrEOF}, // failed: never counts
		rec(300, "green-2"),
		// Sent after switch 2 was issued (480) but before it returned (500):
		// the blue answer is switch 2 taking effect, not switch 1 lagging.
		rec(490, "blue-2"),
		rec(510, "blue-1"),  // after switch 2 (green → blue): new pool
		rec(520, "green-1"), // 20ms after switch 2, old pool
		rec(700, "green-1"), // after switch 3, which failed: not counted
	}
	events := []switchEvent{
		{Began: at(80), At: at(100), From: "blue", To: "green"},
		{Began: at(480), At: at(500), From: "green", To: "blue"},
		{Began: at(600), At: at(600), From: "blue", To: "green", Err: "deploy failed"},
	}
	lat, old := switchLatencies(recs, start, events)
	wantLat := []time.Duration{130 * time.Millisecond, 20 * time.Millisecond, 0}
	wantOld := []int{2, 1, 0}
	for i := range events {
		if lat[i] != wantLat[i] || old[i] != wantOld[i] {
			t.Errorf("switch %d: latency %v, old answers %d; want %v, %d", i+1, lat[i], old[i], wantLat[i], wantOld[i])
		}
	}

	// A clean switch: nothing from the old pool after it.
	lat, old = switchLatencies([]loadclient.Record{rec(10, "blue-1"), rec(200, "green-1")}, start, events[:1])
	if lat[0] != 0 || old[0] != 0 {
		t.Errorf("clean switch: latency %v, old %d; want 0, 0", lat[0], old[0])
	}
}

func TestSwitchTable(t *testing.T) {
	reps := []switchReport{
		{
			Proxy:   "nginx",
			Events:  []switchEvent{{Took: time.Millisecond}, {Took: time.Millisecond}},
			Latency: []time.Duration{100 * time.Millisecond, 140 * time.Millisecond},
			Summary: loadclient.Summary{Requests: 1000, Failed: 10},
		},
		{
			Proxy:   "cutover",
			Events:  []switchEvent{{Took: 300 * time.Millisecond}, {Err: "boom"}},
			Latency: []time.Duration{0, 0},
			Summary: loadclient.Summary{Requests: 900},
		},
		{Proxy: "haproxy", Err: "did not start\nmore"},
	}
	table := switchTable(reps)
	for _, want := range []string{
		"| nginx | 2 | 1000 | 10 | 5.0 | 120.0 ms | 140.0 ms | 100, 140 | 1.0 ms |",
		"| cutover | 1 of 2 | 900 | 0 | 0.0 | 0.0 ms | 0.0 ms | 0, failed | 300.0 ms |",
		"| haproxy | run failed: did not start |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("switch table lacks %q:\n%s", want, table)
		}
	}
}

func TestColour(t *testing.T) {
	for in, want := range map[string]string{"blue-1": "blue", "green-12": "green", "": "", "solo": "solo"} {
		if got := colour(in); got != want {
			t.Errorf("colour(%q) = %q; want %q", in, got, want)
		}
	}
}

// Every run shows the load tool's CPU per request, the figure that tells
// a proxy slower to answer a handshake from one that costs more.
func TestRunsTableShowsLoadToolCPUPerRequest(t *testing.T) {
	out := runsTable([]benchRun{
		{Proxy: "nginx", Case: caseHandshake, Run: 1, CPU: time.Second, LoadCPU: 3 * time.Second,
			Wrk: wrkResult{Requests: 10000, ReqPerSec: 1000}},
		{Proxy: "cutover", Case: caseHandshake, Run: 1, CPU: time.Second, Wrk: wrkResult{Requests: 10000, ReqPerSec: 1000}},
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header, a rule and two rows, got:\n%s", out)
	}
	if !strings.HasSuffix(lines[0], "| load tool µs per req |") {
		t.Errorf("header lacks the load tool column: %s", lines[0])
	}
	if !strings.HasSuffix(lines[2], "| 300.0 |") {
		t.Errorf("nginx row: want 3 s over 10,000 requests = 300.0 µs, got %s", lines[2])
	}
	if !strings.HasSuffix(lines[3], "| – |") {
		t.Errorf("a run without the load tool's CPU shows –, got %s", lines[3])
	}
	if got, want := strings.Count(lines[1], "|"), strings.Count(lines[0], "|"); got != want {
		t.Errorf("rule has %d cells' bars, header %d", got, want)
	}
}
