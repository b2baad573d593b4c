package main

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// Output of `h2load -t2 -c4 -m2 -n200` captured against nginx over TLS
// with its backends stopped: every stream answered 502.
const h2load502 = `starting benchmark...
spawning thread #0: 2 total client(s). 100 total requests
spawning thread #1: 2 total client(s). 100 total requests
TLS Protocol: TLSv1.3
Cipher: TLS_AES_128_GCM_SHA256
Server Temp Key: X25519 253 bits
Application protocol: h2
progress: 10% done
progress: 100% done

finished in 34.85ms, 5738.22 req/s, 1.26MB/s
requests: 200 total, 200 started, 200 done, 0 succeeded, 200 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 200 5xx
traffic: 44.92KB (45996) total, 10.55KB (10800) headers (space savings 45.45%), 30.66KB (31400) data
                     min         max         mean         sd        +/- sd
time for request:       82us      3.30ms       502us       422us    94.00%
time for connect:    16.16ms     19.85ms     17.92ms      1.94ms   100.00%
time to 1st byte:    19.47ms     21.65ms     20.65ms       964us    50.00%
req/s           :    1473.29     1696.85     1535.40      107.99    75.00%
`

func TestParseH2load(t *testing.T) {
	r, err := parseH2load(h2load502)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 0 || r.Non2xx != 200 || r.Failed != 200 || r.Errors() != 200 {
		t.Errorf("502 run: requests %d, non-2xx %d, failed %d, errors %d; want 0, 200, 200, 200 (each failure once)", r.Requests, r.Non2xx, r.Failed, r.Errors())
	}
	if r.Elapsed != 34850*time.Microsecond || r.ReqPerSec != 5738.22 {
		t.Errorf("elapsed %v, req/s %v; want 34.85ms, 5738.22", r.Elapsed, r.ReqPerSec)
	}
	if r.ALPN != "h2" || r.Protocol != "TLSv1.3, TLS_AES_128_GCM_SHA256, X25519 253 bits, h2" {
		t.Errorf("ALPN %q, protocol %q", r.ALPN, r.Protocol)
	}

	// A run cut short: resets, timeouts and requests of -n never done
	// all count; succeeded requests are the request count.
	short := strings.NewReplacer(
		"200 total, 200 started, 200 done, 0 succeeded, 200 failed, 0 errored, 0 timeout",
		"200 total, 190 started, 180 done, 170 succeeded, 10 failed, 6 errored, 1 timeout",
		"0 2xx, 0 3xx, 0 4xx, 200 5xx", "170 2xx, 0 3xx, 1 4xx, 2 5xx",
	).Replace(h2load502)
	if r, err = parseH2load(short); err != nil {
		t.Fatal(err)
	}
	// 3 non-2xx + 6 errored + 1 timeout = the 10 failed; + 20 not done.
	if r.Requests != 170 || r.NotDone != 20 || r.Errors() != 30 {
		t.Errorf("short run: requests %d, not done %d, errors %d (%s); want 170, 20, 30", r.Requests, r.NotDone, r.Errors(), r.errorDetail())
	}
	if d := r.errorDetail(); d != "non-2xx 3, timeout 1, failed 10, errored 6, not completed 20" {
		t.Errorf("errorDetail = %q", d)
	}
	// failed larger than the kinds it is made of: the rest still counts.
	odd := strings.Replace(short, "10 failed", "15 failed", 1)
	if r, err = parseH2load(odd); err != nil || r.Errors() != 35 {
		t.Errorf("failed 15 of which 10 named: errors %d, err %v; want 35", r.Errors(), err)
	}

	for name, out := range map[string]string{
		"no summary":    "starting benchmark...\nApplication protocol: h2\n",
		"bad counts":    strings.Replace(h2load502, "200 done", "two-hundred done", 1),
		"no done count": strings.Replace(h2load502, "200 done, ", "", 1),
		"bad rate":      strings.Replace(h2load502, "5738.22 req/s", "fast", 1),
	} {
		if _, err := parseH2load(out); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestParseH2loadLog(t *testing.T) {
	var b strings.Builder
	// 100 completed requests of 1..100 ms, in shuffled order, and two
	// failed streams (status -1) with huge times that must not count.
	for i := range 100 {
		ms := (i*37)%100 + 1
		b.WriteString("1796165488205083\t200\t" + strconv.Itoa(ms*1000) + "\n")
	}
	b.WriteString("1796165488205083\t-1\t99000000\n1796165488205084\t-1\t98000000\n")
	p50, p99, n, err := parseH2loadLog(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if n != 100 || p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Errorf("n %d, p50 %v, p99 %v; want 100, 50ms, 99ms", n, p50, p99)
	}
	for name, in := range map[string]string{
		"empty":        "",
		"only failed":  "1\t-1\t5\n",
		"two columns":  "1\t200\n",
		"non-numeric":  "1\tok\t5\n",
		"bad duration": "1\t200\t5ms\n",
	} {
		if _, _, _, err := parseH2loadLog(strings.NewReader(in)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestLoadCommandLines(t *testing.T) {
	got := strings.Join(h2loadArgs(h2loadOptions{URL: "https://127.0.0.1:1/", Threads: 2, Connections: 64, Streams: 10, Requests: 64000, LogFile: "/tmp/x.log"}), " ")
	if want := "-t2 -c64 -m10 -n64000 --log-file=/tmp/x.log https://127.0.0.1:1/"; got != want {
		t.Errorf("h2load args = %q; want %q", got, want)
	}
	got = strings.Join(h2loadArgs(h2loadOptions{URL: "https://127.0.0.1:1/", Threads: 2, Connections: 64, Streams: 10, Duration: 2 * time.Second}), " ")
	if want := "-t2 -c64 -m10 -D2 https://127.0.0.1:1/"; got != want {
		t.Errorf("h2load calibration args = %q; want %q", got, want)
	}
	got = strings.Join(wrkArgs(wrkOptions{URL: "https://127.0.0.1:1/", Threads: 2, Connections: 32, Headers: []string{"Connection: close"}}, 15*time.Second), " ")
	if want := "-t2 -c32 -d15s -H Connection: close --latency https://127.0.0.1:1/"; got != want {
		t.Errorf("wrk args = %q; want %q", got, want)
	}
	if n := h2RequestsFor(10123, 15*time.Second, 64); n != 151808 || n%64 != 0 {
		t.Errorf("h2RequestsFor(10123/s, 15s, 64) = %d; want 151808 (2372 per connection)", n)
	}
	if n := h2RequestsFor(0, 15*time.Second, 64); n != 6400 {
		t.Errorf("h2RequestsFor(0/s) = %d; want the floor of 100 per connection, 6400", n)
	}
}

func TestProfileName(t *testing.T) {
	for mode, want := range map[string]string{caseH2: "HTTP-2", caseH1TLS: "HTTP-1.1-over-TLS", "access log off": "access-log-off"} {
		if got := profileName(mode); got != want || strings.Contains(got, "/") {
			t.Errorf("profileName(%q) = %q; want %q", mode, got, want)
		}
	}
}

func TestHTTPSProblems(t *testing.T) {
	ok := func(p, c string) benchRun {
		return benchRun{Proxy: p, Case: c, Run: 1, Wrk: wrkResult{Requests: 100}}
	}
	var runs []benchRun
	for _, c := range httpsCases {
		runs = append(runs, ok("nginx", c), ok("cutover", c))
	}
	if got := httpsProblems(runs, []string{"nginx", "cutover"}, httpsCases); len(got) != 0 {
		t.Errorf("clean runs: %v; want none", got)
	}
	runs[1].Wrk.NotDone = 3 // cutover's HTTP/1.1 over TLS run
	runs[0].Wrk.Non2xx = 7  // nginx's errors are reported, not asserted
	runs[5] = benchRun{Proxy: "cutover", Case: caseHandshake, Run: 1, Err: "wrk exited 1"}
	got := httpsProblems(runs, []string{"nginx", "cutover"}, httpsCases)
	joined := strings.Join(got, "\n")
	if len(got) != 3 || !strings.Contains(joined, "not completed 3") || !strings.Contains(joined, "wrk exited 1") || !strings.Contains(joined, "no measured "+caseHandshake+" run of cutover") {
		t.Errorf("problems = %q; want cutover's 3 incomplete requests, its failed run and its empty row", got)
	}
}
