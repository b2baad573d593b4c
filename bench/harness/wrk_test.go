package main

import (
	"strings"
	"testing"
	"time"
)

// Output of `wrk -t2 -c64 -d2s --latency` captured on the benchmark machine.
const wrkClean = `Running 2s test @ http://127.0.0.1:19001/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.01ms    1.03ms   9.86ms   89.23%
    Req/Sec    35.46k     2.32k   41.35k    70.00%
  Latency Distribution
     50%  752.00us
     75%    1.28ms
     90%    2.13ms
     99%    5.14ms
  141228 requests in 2.00s, 31.92MB read
Requests/sec:  70530.07
Transfer/sec:     15.94MB
`

const wrkErrors = `Running 15s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.00s     0.00us   2.00s   100.00%
    Req/Sec     0.00      0.00     0.00      -nan%
  Latency Distribution
     50%    1.20s 
     75%    1.50s 
     90%    1.90s 
     99%    1.01m 
  12 requests in 15.02s, 1.20KB read
  Socket errors: connect 3, read 4, write 5, timeout 6
  Non-2xx or 3xx responses: 7
Requests/sec:      0.80
Transfer/sec:      81.79B
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkClean)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 141228, Elapsed: 2 * time.Second, ReqPerSec: 70530.07, P50: 752 * time.Microsecond, P99: 5140 * time.Microsecond}
	if r != want {
		t.Errorf("parseWrk = %+v\nwant        %+v", r, want)
	}
	if r.Errors() != 0 {
		t.Errorf("Errors = %d; want 0", r.Errors())
	}
}

func TestParseWrkErrors(t *testing.T) {
	r, err := parseWrk(wrkErrors)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 12, Elapsed: 15020 * time.Millisecond, ReqPerSec: 0.8, P50: 1200 * time.Millisecond, P99: 60600 * time.Millisecond,
		Non2xx: 7, Connect: 3, Read: 4, Write: 5, Timeout: 6}
	if r != want {
		t.Errorf("parseWrk = %+v\nwant        %+v", r, want)
	}
	if r.Errors() != 25 {
		t.Errorf("Errors = %d; want 25", r.Errors())
	}
}

func TestParseWrkWithoutLatencyFlag(t *testing.T) {
	var kept []string
	for _, l := range strings.Split(wrkClean, "\n") {
		if !strings.Contains(l, "%") || strings.Contains(l, "Stdev") || strings.Contains(l, "Latency ") {
			kept = append(kept, l)
		}
	}
	_, err := parseWrk(strings.Join(kept, "\n"))
	if err == nil || !strings.Contains(err.Error(), "50% latency") || !strings.Contains(err.Error(), "--latency") {
		t.Fatalf("parseWrk without the distribution: err = %v; want one naming the missing 50%% line and --latency", err)
	}
}

func TestParseWrkBadNumbers(t *testing.T) {
	bad := strings.Replace(wrkClean, "Requests/sec:  70530.07", "Requests/sec:  lots", 1)
	if _, err := parseWrk(bad); err == nil {
		t.Fatal("parseWrk with a non-numeric rate: want an error")
	}
	bad = strings.Replace(wrkClean, "99%    5.14ms", "99%    5.14", 1)
	if _, err := parseWrk(bad); err == nil {
		t.Fatal("parseWrk with a unitless latency: want an error")
	}
}

func TestParseWrkDuration(t *testing.T) {
	tests := map[string]time.Duration{
		"752.00us": 752 * time.Microsecond,
		"1.28ms":   1280 * time.Microsecond,
		"2.00s":    2 * time.Second,
		"1.50m":    90 * time.Second,
		"1.00h":    time.Hour,
		"0.00us":   0,
	}
	for in, want := range tests {
		got, err := parseWrkDuration(in)
		if err != nil || got != want {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "12", "ms", "-1ms", "1.2xs"} {
		if _, err := parseWrkDuration(in); err == nil {
			t.Errorf("parseWrkDuration(%q): want an error", in)
		}
	}
}
