package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The HTTPS phase's workloads, in the order they run and are reported.
const (
	caseH1TLS     = "HTTP/1.1 over TLS"
	caseH2        = "HTTP/2"
	caseHandshake = "new TLS connection per request"
	// caseHandshakeBlocking is caseHandshake with a client that waits
	// in a blocking read (see stime.go).
	caseHandshakeBlocking = "new TLS connection per request, blocking client"
)

var httpsCases = []string{caseH1TLS, caseH2, caseHandshake, caseHandshakeBlocking}

// httpsCaseKeys name the cases for -https-cases.
var httpsCaseKeys = map[string]string{"h1": caseH1TLS, "h2": caseH2, "handshake": caseHandshake, "handshake-blocking": caseHandshakeBlocking}

// httpsProxies are the proxies the HTTPS phase can run: httputilproxy has
// no TLS listener.
func httpsProxies(proxies []string) []string {
	return slices.DeleteFunc(slices.Clone(proxies), func(p string) bool { return p == proxyHTTPUtil })
}

// httpsPhase runs every HTTPS case against each proxy, interleaved (nginx,
// haproxy, cutover, nginx, ...), -runs times, access log off.
func (h *harness) httpsPhase(ctx context.Context, proxies []string) ([]benchRun, error) {
	n := h.opts.h2Requests
	if n == 0 && len(proxies) > 0 && slices.Contains(h.opts.httpsCases, caseH2) {
		var err error
		if n, err = h.calibrateH2(ctx, proxies[0]); err != nil {
			return nil, err
		}
	}
	h.h2Requests = n
	var runs []benchRun
	for _, c := range h.opts.httpsCases {
		cr, err := h.caseRuns(ctx, proxies, c, h.tls, h.httpsLoad(c, n))
		if err != nil {
			return nil, err
		}
		runs = append(runs, cr...)
	}
	return runs, nil
}

// caseRuns measures one case against each proxy, interleaved (nginx,
// haproxy, cutover, nginx, ...), -runs times, logging each run.
func (h *harness) caseRuns(ctx context.Context, proxies []string, c string, tlsFiles *tlsFiles, load loadFunc) ([]benchRun, error) {
	var runs []benchRun
	for i := 1; i <= h.opts.runs; i++ {
		for _, p := range proxies {
			r := h.measure(ctx, benchRun{Proxy: p, Case: c, Run: i}, tlsFiles, load)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if r.Err != "" {
				h.logf("[%s] run %d/%d %s: FAILED: %s", c, i, h.opts.runs, p, r.Err)
			} else {
				h.logf("[%s] run %d/%d %-7s %9s req/s  p50 %s  p99 %s  cpu %.2fs  %s req/cpu-s  errors %d %s",
					c, i, h.opts.runs, p, thousands(r.Wrk.ReqPerSec), ms(r.Wrk.P50), ms(r.Wrk.P99), r.CPU.Seconds(), thousands(r.perCPU()), r.Wrk.Errors(), r.Wrk.errorDetail())
			}
			runs = append(runs, r)
		}
	}
	return runs, nil
}

// httpsLoad is the load of one HTTPS case; n is h2load's request count.
func (h *harness) httpsLoad(c string, n int) loadFunc {
	return func(ctx context.Context, listen string) (wrkResult, time.Duration, error) {
		url := "https://" + listen + "/"
		if c == caseHandshakeBlocking {
			return h.runSTime(ctx, sTimeOptions{Addr: listen, Clients: h.opts.handshakeConnections, Duration: h.opts.duration})
		}
		if c == caseH2 {
			return h.runH2load(ctx, h2loadOptions{URL: url, Threads: h.opts.threads, Connections: h.opts.connections, Streams: h.opts.h2Streams, Requests: n})
		}
		o := wrkOptions{URL: url, Threads: h.opts.threads, Connections: h.opts.connections}
		if c == caseHandshake {
			o.Connections = h.opts.handshakeConnections
			o.Headers = []string{"Connection: close"}
		}
		return h.wrk(ctx, o)
	}
}

// h2loadOptions are one h2load run's settings.
type h2loadOptions struct {
	URL                           string
	Threads, Connections, Streams int
	// Requests is -n; Duration, when set instead, is -D (the calibration
	// run only: at the end of -D h2load cancels the streams in flight,
	// and a proxy may answer those with 502, which h2load counts as
	// failed; with -n every stream runs to its end).
	Requests int
	Duration time.Duration
	// LogFile is h2load's per-request log, for percentiles ("": none).
	LogFile string
}

// h2loadArgs is h2load's command line for o.
func h2loadArgs(o h2loadOptions) []string {
	args := []string{
		fmt.Sprintf("-t%d", o.Threads),
		fmt.Sprintf("-c%d", o.Connections),
		fmt.Sprintf("-m%d", o.Streams),
	}
	if o.Duration > 0 {
		args = append(args, fmt.Sprintf("-D%d", int(o.Duration.Round(time.Second)/time.Second)))
	} else {
		args = append(args, fmt.Sprintf("-n%d", o.Requests))
	}
	if o.LogFile != "" {
		args = append(args, "--log-file="+o.LogFile)
	}
	return append(args, o.URL)
}

// runH2load runs h2load and returns what it measured (p50 and p99 from
// its per-request log) and the CPU time it used. It fails unless HTTP/2
// was negotiated.
func (h *harness) runH2load(ctx context.Context, o h2loadOptions) (wrkResult, time.Duration, error) {
	if o.LogFile == "" {
		f, err := os.CreateTemp(h.dir, "h2load-*.log")
		if err != nil {
			return wrkResult{}, 0, fmt.Errorf("h2load log file: %w", err)
		}
		_ = f.Close()
		o.LogFile = f.Name()
		defer os.Remove(o.LogFile)
	}
	// A run of -n is sized to take -d; a slow machine may take several
	// times that, which is measured rather than cut off.
	ctx, cancel := context.WithTimeout(ctx, 5*h.opts.duration+time.Minute)
	defer cancel()
	args := h2loadArgs(o)
	cmd := exec.CommandContext(ctx, h.tools.h2load, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return wrkResult{}, 0, fmt.Errorf("h2load %v: %w\n%s", args, err, tail(out.String(), 20))
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	res, err := parseH2load(out.String())
	if err != nil {
		return res, cpu, err
	}
	if res.ALPN != "h2" {
		return res, cpu, fmt.Errorf("h2load negotiated %q, not h2; the proxy's ALPN is not offering HTTP/2:\n%s", res.ALPN, tail(out.String(), 20))
	}
	if res.P50, res.P99, _, err = readH2loadLog(o.LogFile); err != nil {
		return res, cpu, err
	}
	return res, cpu, nil
}

// calibrateH2 sizes h2load's -n so that a run takes about -d: a 2-second
// run of -D against proxy, whose completed requests per second times -d,
// rounded to a whole number of requests per connection.
func (h *harness) calibrateH2(ctx context.Context, proxy string) (int, error) {
	const calib = 2 * time.Second
	var n int
	r := h.measure(ctx, benchRun{Proxy: proxy, Case: "h2load calibration", Run: 1}, h.tls, func(ctx context.Context, listen string) (wrkResult, time.Duration, error) {
		return h.runH2load(ctx, h2loadOptions{URL: "https://" + listen + "/", Threads: h.opts.threads, Connections: h.opts.connections, Streams: h.opts.h2Streams, Duration: calib})
	})
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if r.Err != "" {
		return 0, fmt.Errorf("h2load calibration run against %s: %s", proxy, r.Err)
	}
	n = h2RequestsFor(float64(r.Wrk.Requests)/calib.Seconds(), h.opts.duration, h.opts.connections)
	h.logf("h2load calibration against %s: %s completed req/s over %v; runs use -n%d", proxy, thousands(float64(r.Wrk.Requests)/calib.Seconds()), calib, n)
	return n, nil
}

// h2RequestsFor is -n for a run of about d at rate requests per second,
// a multiple of conns (h2load splits -n across its connections), at least
// 100 per connection.
func h2RequestsFor(rate float64, d time.Duration, conns int) int {
	perConn := int(rate*d.Seconds()) / conns
	return max(perConn, 100) * conns
}

// httpsProblems are the HTTPS phase's failures: runs that could not be
// measured, any error in cutover's runs, and cases without a measured run.
func httpsProblems(runs []benchRun, proxies, cases []string) []string {
	var problems []string
	measured := map[string]int{}
	for _, r := range runs {
		if r.Err != "" {
			problems = append(problems, fmt.Sprintf("%s %s run %d failed: %s", r.Proxy, r.Case, r.Run, firstLine(r.Err)))
			continue
		}
		measured[r.Proxy+"/"+r.Case]++
		if r.Wrk.Requests == 0 {
			problems = append(problems, fmt.Sprintf("%s %s run %d: no request completed", r.Proxy, r.Case, r.Run))
		}
		if isCutover(r.Proxy) && r.Wrk.Errors() > 0 {
			problems = append(problems, fmt.Sprintf("cutover %s run %d: %d errors (%s); want 0", r.Case, r.Run, r.Wrk.Errors(), r.Wrk.errorDetail()))
		}
	}
	for _, c := range cases {
		for _, p := range proxies {
			if measured[p+"/"+c] == 0 {
				problems = append(problems, fmt.Sprintf("no measured %s run of %s: its table row is empty", c, p))
			}
		}
	}
	return problems
}

// httpsSection is the HTTPS phase's part of the report.
func (h *harness) httpsSection(runs []benchRun, proxies []string, nproc int) string {
	var b strings.Builder
	o := h.opts
	secs := int(o.duration.Round(time.Second) / time.Second)
	fmt.Fprintf(&b, "\n### HTTPS\n\nThe same two backends; each proxy serves one ECDSA P-256 certificate (generated for the run) on 127.0.0.1 with TLS 1.2/1.3 and ALPN h2 and http/1.1; access log off; runs interleaved; median of %d run(s) each. nginx has `keepalive_requests %d` (its default of 1,000 ends an HTTP/2 connection after 1,000 streams and h2load does not reconnect). Errors are every failure wrk or h2load reports, per proxy, summed over the runs.\n",
		o.runs, h2KeepaliveRequests)
	for _, c := range o.httpsCases {
		var cmd string
		switch c {
		case caseH1TLS:
			cmd = fmt.Sprintf("`wrk -t%d -c%d -d%ds --latency`, keep-alive", o.threads, o.connections, secs)
		case caseH2:
			cmd = fmt.Sprintf("`h2load -t%d -c%d -m%d -n%d` (the request count sized for about %ds; p50/p99 from its `--log-file`, completed requests only)", o.threads, o.connections, o.h2Streams, h.h2Requests, secs)
		case caseHandshake:
			cmd = fmt.Sprintf("`wrk -t%d -c%d -d%ds --latency -H 'Connection: close'`: a TLS handshake per request (wrk resumes its last session: TLS 1.3 PSK with a fresh X25519 exchange, no certificate). wrk polls a connection whose handshake is under way until the server's flight arrives, so a proxy slower to answer leaves it more CPU to burn: see the load tool's CPU per request in the runs below", o.threads, o.handshakeConnections, secs)
		case caseHandshakeBlocking:
			cmd = fmt.Sprintf("%d × `openssl s_time -connect ... -www / -reuse -time %d` side by side: the same workload (a resumed TLS 1.3 handshake and one request per connection) from a client that waits in a blocking read; req/s sums each process's connections over its own wall time; s_time measures no latency and sees no HTTP status (a connection that read nothing counts as an error)", o.handshakeConnections, secs)
		}
		fmt.Fprintf(&b, "\n#### %s\n\n%s\n\n", c, cmd)
		var caseRuns []benchRun
		for _, r := range runs {
			if r.Case == c {
				caseRuns = append(caseRuns, r)
			}
		}
		b.WriteString(benchTable(summarize(caseRuns, proxies, false)))
		if protos := negotiated(caseRuns); protos != "" {
			b.WriteString("\nNegotiated (h2load): " + protos + "\n")
		}
	}
	if notes := disturbedRuns(runs, nproc, o.duration); len(notes) > 0 {
		b.WriteString("\n**Disturbed runs**: other work on the machine used more than 10% of its CPU during " + strings.Join(notes, "; ") + ". Their req/s and latencies are not comparable; requests per proxy CPU-second are less affected.\n")
	}
	b.WriteString("\n<details><summary>Every HTTPS run</summary>\n\n")
	b.WriteString(runsTable(runs))
	b.WriteString("\n</details>\n")
	return b.String()
}

// negotiated lists, per proxy, the TLS parameters h2load reported.
func negotiated(runs []benchRun) string {
	seen := map[string]bool{}
	var parts []string
	for _, r := range runs {
		if r.Err != "" || r.Wrk.Protocol == "" {
			continue
		}
		k := r.Proxy + ": " + r.Wrk.Protocol
		if !seen[k] {
			seen[k] = true
			parts = append(parts, k)
		}
	}
	return strings.Join(parts, "; ")
}
