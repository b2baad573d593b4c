package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
)

func TestParseOptionsSmokeDefaults(t *testing.T) {
	o, err := parseOptions([]string{"-smoke"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 2*time.Second || o.runs != 1 || o.switches != 3 || o.switchDuration != 3*time.Second {
		t.Errorf("smoke options = %+v; want -d 2s, 1 run, 3 switches over 3s", o)
	}
	if o.idleConnections != 1000 || o.idleTLS {
		t.Errorf("smoke idle check: %d connections, TLS %v; want 1000 plain only", o.idleConnections, o.idleTLS)
	}
	if len(o.proxies) != 3 || len(o.logModes) != 2 || len(o.phases) != 3 {
		t.Errorf("smoke runs proxies %v, log modes %v, phases %v; want all", o.proxies, o.logModes, o.phases)
	}
	// An explicit flag wins over the smoke default.
	o, err = parseOptions([]string{"-smoke", "-d", "5s"}, io.Discard)
	if err != nil || o.duration != 5*time.Second {
		t.Errorf("-smoke -d 5s: duration %v, err %v; want 5s", o.duration, err)
	}
}

func TestParseOptionsFullRunAndHTTPS(t *testing.T) {
	o, err := parseOptions([]string{"-phases", "https,idle", "-h2-n", "6400"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.idleConnections != 10000 || !o.idleTLS || o.h2Streams != 10 || o.h2Requests != 6400 || o.handshakeConnections != 32 {
		t.Errorf("options = %+v; want 10,000 idle connections plain and TLS, h2load -m10 -n6400, 32 handshake connections", o)
	}
	if strings.Join(o.phases, ",") != "https,idle" {
		t.Errorf("phases = %v", o.phases)
	}
	if !slices.Equal(o.httpsCases, httpsCases) {
		t.Errorf("https cases = %v; want all of %v", o.httpsCases, httpsCases)
	}
	o, err = parseOptions([]string{"-phases", "https", "-https-cases", "handshake,h2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{caseH2, caseHandshake}; !slices.Equal(o.httpsCases, want) {
		t.Errorf("-https-cases handshake,h2: cases = %v; want %v (in the report's order)", o.httpsCases, want)
	}
	o, err = parseOptions([]string{"-phases", "newconn"}, io.Discard)
	if err != nil || !slices.Equal(o.phases, []string{phaseNewConn}) || o.handshakeConnections != 32 {
		t.Errorf("-phases newconn: phases %v, connections %d, err %v; want the newconn phase on 32 connections", o.phases, o.handshakeConnections, err)
	}
	o, err = parseOptions([]string{"-phases", "https", "-https-cases", "handshake-blocking"}, io.Discard)
	if err != nil || !slices.Equal(o.httpsCases, []string{caseHandshakeBlocking}) {
		t.Errorf("-https-cases handshake-blocking: cases = %v, err %v; want only the blocking-client case", o.httpsCases, err)
	}
}

func TestParseOptionsErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-proxies", "nginx,traefik"},
		{"-logs", "maybe"},
		{"-phases", "bench,sok"},
		{"-d", "500ms"},
		{"-t", "4", "-c", "2"},
		{"-runs", "0"},
		{"-phases", "https", "-h2-m", "0"},
		{"-phases", "https", "-h2-n", "10"},
		{"-phases", "https", "-handshake-c", "1"},
		{"-phases", "https", "-https-cases", "h3"},
		{"extra"},
	} {
		if _, err := parseOptions(args, io.Discard); err == nil {
			t.Errorf("parseOptions(%q): want an error", args)
		}
	}
}

func TestBenchProblems(t *testing.T) {
	o := options{logModes: []bool{false}}
	ok := func(p string) benchRun {
		return benchRun{Proxy: p, Run: 1, LogLines: -1, Wrk: wrkResult{Requests: 100}}
	}
	if got := benchProblems([]benchRun{ok("nginx"), ok("cutover")}, []string{"nginx", "cutover"}, o); len(got) != 0 {
		t.Errorf("clean runs: problems %v; want none", got)
	}
	bad := ok("cutover")
	bad.Wrk.Read = 2
	nginxErr := ok("nginx")
	nginxErr.Wrk.Non2xx = 5 // nginx's errors are reported, not asserted
	got := benchProblems([]benchRun{nginxErr, bad, ok("haproxy")}, []string{"nginx", "cutover", "haproxy"}, o)
	if len(got) != 1 || !strings.Contains(got[0], "cutover run 1") || !strings.Contains(got[0], "read 2") {
		t.Errorf("problems = %v; want exactly one naming cutover's read errors", got)
	}
	got = benchProblems([]benchRun{ok("nginx")}, []string{"nginx", "cutover"}, o)
	if len(got) != 1 || !strings.Contains(got[0], "no measured run of cutover") {
		t.Errorf("missing cutover row: problems %v", got)
	}
	logged := ok("nginx")
	logged.LogOn, logged.LogLines = true, 10
	got = benchProblems([]benchRun{logged}, []string{"nginx"}, options{logModes: []bool{true}})
	if len(got) != 0 {
		t.Errorf("short nginx access log: problems %v; want none (noted, not asserted)", got)
	}
	if notes := logShortfalls([]benchRun{logged}); len(notes) != 1 || !strings.Contains(notes[0], "nginx run 1 logged 10 lines for 100 requests") {
		t.Errorf("logShortfalls = %v", notes)
	}
	logged.Proxy = "cutover"
	got = benchProblems([]benchRun{logged}, []string{"cutover"}, options{logModes: []bool{true}})
	if len(got) != 1 || !strings.Contains(got[0], "10 access log lines for 100 requests") {
		t.Errorf("short cutover access log: problems %v", got)
	}
}

func TestSwitchProblems(t *testing.T) {
	o := options{switches: 2}
	two := []switchEvent{{}, {}}
	reps := []switchReport{
		{Proxy: "nginx", Events: two, Summary: loadclient.Summary{Requests: 100, Failed: 9}},
		{Proxy: "cutover", Events: two, Summary: loadclient.Summary{Requests: 100}},
	}
	if got := switchProblems(reps, o); len(got) != 0 {
		t.Errorf("nginx failures alone: problems %v; want none (they are the comparison)", got)
	}
	reps[1].Summary.Failed = 1
	reps[1].Events = []switchEvent{{}, {Err: "deploy: exit status 1"}}
	got := switchProblems(reps, o)
	if len(got) != 2 || !strings.Contains(strings.Join(got, "\n"), "switch 2") || !strings.Contains(strings.Join(got, "\n"), "1 of 100 requests failed") {
		t.Errorf("problems = %v; want the failed deploy and the failed request", got)
	}
}

func TestDisturbedRuns(t *testing.T) {
	runs := []benchRun{
		{Proxy: "nginx", Run: 1, OtherCPU: 2 * time.Second},                // 2/30 s: 7%
		{Proxy: "cutover", Run: 1, OtherCPU: 6 * time.Second},              // 20%
		{Proxy: "haproxy", Run: 1, OtherCPU: -1},                           // unknown
		{Proxy: "cutover", Run: 2, LogOn: true, OtherCPU: 4 * time.Second}, // 13%
		{Proxy: "nginx", Run: 2, OtherCPU: 9 * time.Second, Err: "failed"},
	}
	got := disturbedRuns(runs, 2, 15*time.Second)
	want := []string{"cutover run 1 with access log off (20%)", "cutover run 2 with access log on (13%)"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("disturbedRuns = %q; want %q", got, want)
	}
}
