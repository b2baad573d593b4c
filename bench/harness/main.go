// Command harness benchmarks cutover against nginx and HAProxy on this
// machine: the same two backends behind each proxy on 127.0.0.1, wrk runs
// interleaved (nginx, haproxy, cutover, nginx, ...), with access logs off and
// on; an idle-connections memory check; and a switch run in which a strict
// load client counts every failed request while nginx is reloaded onto
// another upstream and cutover is switched with deploy/rollback.
//
// It is started by bench/run, which builds it; see docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// options are the command-line settings.
type options struct {
	repo        string
	smoke       bool
	duration    time.Duration
	connections int
	threads     int
	runs        int
	proxies     []string
	logModes    []bool // false = access log off, true = on
	phases      []string

	switches          int
	switchDuration    time.Duration
	switchConnections int
	idleConnections   int
	// idleTLS runs the idle check over TLS as well.
	idleTLS bool

	// The HTTPS phase: h2load's streams per connection, its request count
	// per run (0: sized from -d), and the connections of the
	// new-connection-per-request case.
	h2Streams, h2Requests, handshakeConnections int
	// httpsCases are the HTTPS cases to run, in httpsCases' order.
	httpsCases []string
	// profileDir, when set, makes every cutover run write a CPU profile
	// (serve --cpu-profile) into it.
	profileDir string
	// quietWait is how long to wait before each run for other work on the
	// machine to stop (0: do not wait).
	quietWait time.Duration

	out  string
	keep bool
}

// Phases.
const (
	phaseBench  = "bench"
	phaseIdle   = "idle"
	phaseSwitch = "switch"
	phaseSoak   = "soak"
	phaseHTTPS  = "https"
	// phaseNewConn is plain HTTP with a new connection per request.
	phaseNewConn = "newconn"
)

// knownPhases are what -phases accepts.
var knownPhases = []string{phaseBench, phaseIdle, phaseSwitch, phaseSoak, phaseHTTPS, phaseNewConn}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench/run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.repo, "repo", ".", "cutover repository root (where go.mod is)")
	fs.BoolVar(&o.smoke, "smoke", false, "a few seconds in all: -d 2s, 1 run, 3 switches; fails unless cutover's runs have zero errors")
	fs.DurationVar(&o.duration, "d", 15*time.Second, "wrk duration per run")
	fs.IntVar(&o.connections, "c", 64, "wrk connections")
	fs.IntVar(&o.threads, "t", 2, "wrk threads")
	fs.IntVar(&o.runs, "runs", 3, "runs per proxy and log mode (the table shows medians)")
	proxies := fs.String("proxies", strings.Join(allProxies, ","), "proxies to run, comma-separated, in interleaving order")
	logs := fs.String("logs", "off,on", "access log modes to run: off, on or both")
	phases := fs.String("phases", "bench,idle,switch", "what to run: bench (wrk table), idle (memory with idle connections), switch (failed requests per switch), soak (cutover alone for -d: a switch every second, a backend SIGKILL every 3s, a reload every 2s; failed requests, RSS and descriptors), https (HTTP/1.1 over TLS with wrk, HTTP/2 with h2load, a new TLS connection per request), newconn (plain HTTP, a new connection per request)")
	fs.IntVar(&o.switches, "switches", 10, "switches in the switch run")
	fs.DurationVar(&o.switchDuration, "switch-d", 20*time.Second, "duration of the switch run per proxy")
	fs.IntVar(&o.switchConnections, "switch-c", 32, "keep-alive connections of the switch run's load client")
	fs.IntVar(&o.idleConnections, "idle-c", 10000, "idle keep-alive connections for the memory check (the harness, the proxy and each of its processes need one descriptor per connection; the file limit is raised to its hard limit)")
	fs.BoolVar(&o.idleTLS, "idle-tls", true, "also run the idle check over TLS (HTTP/1.1, one request per connection)")
	fs.IntVar(&o.h2Streams, "h2-m", 10, "https phase: h2load's concurrent streams per connection (-m)")
	fs.IntVar(&o.h2Requests, "h2-n", 0, "https phase: h2load's requests per run (-n); 0: sized from -d by a 2s calibration run against the first proxy")
	fs.IntVar(&o.handshakeConnections, "handshake-c", 32, "https and newconn phases: wrk connections of the new-connection-per-request cases")
	cases := fs.String("https-cases", "h1,h2,handshake,handshake-blocking", "https phase: the cases to run: h1 (HTTP/1.1 over TLS), h2 (HTTP/2), handshake (a new TLS connection per request, wrk), handshake-blocking (the same with openssl s_time, a client that does not poll)")
	fs.StringVar(&o.profileDir, "cpu-profile", "", "write a CPU profile of every cutover run (serve --cpu-profile) into this folder")
	fs.DurationVar(&o.quietWait, "quiet-wait", 0, "before each wrk run, wait up to this long for other work on the machine to stop (for shared machines; 0: don't wait)")
	fs.StringVar(&o.out, "out", "", "also write the markdown report to this file")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary folder (configs, logs) for inspection")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: bench/run [flags]\n\nBenchmarks cutover against nginx and HAProxy on 127.0.0.1. Flags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q; all settings are flags (see -h)", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.smoke {
		// Smoke defaults apply unless a flag was given explicitly.
		if !set["d"] {
			o.duration = 2 * time.Second
		}
		if !set["runs"] {
			o.runs = 1
		}
		if !set["switches"] {
			o.switches = 3
		}
		if !set["switch-d"] {
			o.switchDuration = 3 * time.Second
		}
		if !set["idle-c"] {
			o.idleConnections = 1000
		}
		if !set["idle-tls"] {
			o.idleTLS = false
		}
	}

	for p := range strings.SplitSeq(*proxies, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(knownProxies, p) {
			return o, fmt.Errorf("-proxies: unknown proxy %q; choose from %s", p, strings.Join(knownProxies, ","))
		}
		o.proxies = append(o.proxies, p)
	}
	for m := range strings.SplitSeq(*logs, ",") {
		switch strings.TrimSpace(m) {
		case "off":
			o.logModes = append(o.logModes, false)
		case "on":
			o.logModes = append(o.logModes, true)
		default:
			return o, fmt.Errorf("-logs: unknown mode %q; use off, on or off,on", m)
		}
	}
	for p := range strings.SplitSeq(*phases, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(knownPhases, p) {
			return o, fmt.Errorf("-phases: unknown phase %q; use %s", p, strings.Join(knownPhases, ", "))
		}
		o.phases = append(o.phases, p)
	}
	want := map[string]bool{}
	for k := range strings.SplitSeq(*cases, ",") {
		c, ok := httpsCaseKeys[strings.TrimSpace(k)]
		if !ok {
			return o, fmt.Errorf("-https-cases: unknown case %q; use h1, h2, handshake, handshake-blocking or a comma-separated list of them", k)
		}
		want[c] = true
	}
	for _, c := range httpsCases {
		if want[c] {
			o.httpsCases = append(o.httpsCases, c)
		}
	}
	switch {
	case o.duration < time.Second:
		return o, fmt.Errorf("-d %v: wrk needs at least 1s", o.duration)
	case o.connections < 1 || o.threads < 1 || o.threads > o.connections:
		return o, fmt.Errorf("-c %d -t %d: need at least one connection per thread", o.connections, o.threads)
	case o.runs < 1:
		return o, fmt.Errorf("-runs %d: need at least 1", o.runs)
	case o.switches < 1 || o.switchConnections < 1 || o.switchDuration <= 0:
		return o, fmt.Errorf("-switches %d -switch-c %d -switch-d %v: all must be positive", o.switches, o.switchConnections, o.switchDuration)
	case o.idleConnections < 1:
		return o, fmt.Errorf("-idle-c %d: need at least 1", o.idleConnections)
	case o.h2Streams < 1 || o.handshakeConnections < o.threads:
		return o, fmt.Errorf("-h2-m %d -handshake-c %d: need at least 1 stream and a connection per thread (-t %d)", o.h2Streams, o.handshakeConnections, o.threads)
	case o.h2Requests != 0 && o.h2Requests < o.connections:
		return o, fmt.Errorf("-h2-n %d: h2load needs at least one request per connection (-c %d)", o.h2Requests, o.connections)
	}
	if o.profileDir != "" {
		abs, err := filepath.Abs(o.profileDir)
		if err != nil {
			return o, fmt.Errorf("-cpu-profile %s: %w", o.profileDir, err)
		}
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return o, fmt.Errorf("-cpu-profile: %w", err)
		}
		o.profileDir = abs
	}
	return o, nil
}

// tools are the programs the harness runs.
type tools struct {
	nginx, haproxy, wrk string
	h2load              string // found or installed only for the https phase
	openssl             string // likewise (s_time, the blocking handshake client)
	backend, cutover    string
	httputil            string // built only when -proxies names it
	// cutoverMissing says why cutover cannot be benchmarked ("" when it can);
	// cutoverNoSwitch why it cannot be switched.
	cutoverMissing, cutoverNoSwitch string
}

// harness holds what the phases share.
type harness struct {
	opts     options
	dir      string
	tools    tools
	sup      *supervisor
	hz       ticksPerSecond
	stderr   io.Writer
	backends map[string][]string // pool colour → addresses
	// backendProcs are the backend processes, whose CPU time is accounted
	// for when estimating outside load.
	backendProcs []*process
	seq          int
	// tls is the certificate the HTTPS phase and the TLS idle check serve.
	tls *tlsFiles
	// h2Requests is h2load's -n in the HTTPS phase (once calibrated).
	h2Requests int
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.stderr, "bench: "+format+"\n", args...)
}

// instanceDir is a fresh folder for one proxy instance.
func (h *harness) instanceDir(name string) string {
	h.seq++
	return filepath.Join(h.dir, fmt.Sprintf("%02d-%s", h.seq, name))
}

func (h *harness) pool(colour string) []string { return h.backends[colour] }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	h := &harness{opts: opts, sup: &supervisor{}, hz: clockTicks(), stderr: stderr}
	// Everything started is stopped by PID on every way out, Ctrl-C included.
	defer h.sup.stopAll(stderr)

	report, problems, err := h.run(ctx)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "bench: interrupted; every process it started has been stopped")
			return 130
		}
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	fmt.Fprint(stdout, report)
	if opts.out != "" {
		if err := os.WriteFile(opts.out, []byte(report), 0o644); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, "bench: FAIL:", p)
		}
		return 1
	}
	return 0
}

// run does the phases and returns the markdown report and the problems that
// make the command fail.
func (h *harness) run(ctx context.Context) (string, []string, error) {
	dir, err := os.MkdirTemp("", "cutover-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("create temp folder: %w", err)
	}
	// nginx workers run as nobody and need to traverse to their folders.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("chmod %s: %w", dir, err)
	}
	h.dir = dir
	if h.opts.keep {
		h.logf("temporary folder kept: %s", dir)
	} else {
		// Stop every process before removing the folder it writes into;
		// main's own stopAll then finds nothing left.
		defer func() {
			h.sup.stopAll(h.stderr)
			_ = os.RemoveAll(dir)
		}()
	}

	if err := h.prepare(ctx); err != nil {
		return "", nil, err
	}
	var problems []string
	proxies := h.opts.proxies
	if slices.Contains(proxies, proxyCutover) && h.tools.cutoverMissing != "" {
		msg := "cutover is not benchmarked: " + h.tools.cutoverMissing
		h.logf("WARNING: %s", msg)
		problems = append(problems, msg)
		proxies = slices.DeleteFunc(slices.Clone(proxies), func(p string) bool { return p == proxyCutover })
	}
	if h.opts.smoke && !slices.Equal(h.opts.proxies, allProxies) {
		problems = append(problems, "smoke mode must run all of "+strings.Join(allProxies, ", "))
	}

	machine := readMachine(h.opts.repo, h.tools)
	var b strings.Builder
	fmt.Fprintf(&b, "## cutover benchmark\n\n")
	fmt.Fprintf(&b, "Command: `%s`\n\n", commandLine())
	b.WriteString(machine.markdown())

	if slices.Contains(h.opts.phases, phaseBench) {
		runs, err := h.benchPhase(ctx, proxies)
		if err != nil {
			return "", nil, err
		}
		problems = append(problems, benchProblems(runs, proxies, h.opts)...)
		fmt.Fprintf(&b, "\n### Throughput\n\n`wrk -t%d -c%d -d%s --latency`, two backends (100-byte body) behind each proxy with upstream keep-alive, round robin; runs interleaved; median of %d run(s) each. Proxy CPU-s is user+system time of all the proxy's processes during the run; peak RSS is VmHWM summed over them.\n",
			h.opts.threads, h.opts.connections, h.opts.duration, h.opts.runs)
		for _, logOn := range h.opts.logModes {
			if logOn {
				b.WriteString("\n#### Access log on (combined format, to a file)\n\n")
				if slices.Contains(proxies, proxyHAProxy) {
					b.WriteString("HAProxy cannot write a log file itself; it logs `option httplog` lines to standard output (`log stdout`), which the harness sends to a file.\n\n")
				}
			} else {
				b.WriteString("\n#### Access log off\n\n")
			}
			b.WriteString(benchTable(summarize(runs, proxies, logOn)))
		}
		if notes := disturbedRuns(runs, machine.NProc, h.opts.duration); len(notes) > 0 {
			b.WriteString("\n**Disturbed runs**: other work on the machine used more than 10% of its CPU during " + strings.Join(notes, "; ") + ". Their req/s and latencies are not comparable; requests per proxy CPU-second are less affected.\n")
		}
		if notes := logShortfalls(runs); len(notes) > 0 {
			b.WriteString("\nAccess logs shorter than the request count: " + strings.Join(notes, "; ") + ". (HAProxy's stdout logger drops a line when another thread holds it; see DroppedLogs in its `show info`.)\n")
		}
		b.WriteString("\n<details><summary>Every run</summary>\n\nOther CPU-s: what the machine spent during the run beyond the proxy, wrk, the backends and the harness (from /proc/stat); a large value marks a run disturbed by other work.\n\n")
		b.WriteString(runsTable(runs))
		b.WriteString("\n</details>\n")
	}

	if slices.Contains(h.opts.phases, phaseIdle) {
		var results []idleResult
		modes := []bool{false}
		if h.opts.idleTLS {
			modes = append(modes, true)
		}
		for _, tlsOn := range modes {
			for _, p := range proxies {
				if tlsOn && p == proxyHTTPUtil {
					continue // no TLS listener
				}
				h.logf("idle check: %s with %d connections (TLS %v)", p, h.opts.idleConnections, tlsOn)
				results = append(results, h.idleCheck(ctx, p, h.opts.idleConnections, tlsOn))
				if ctx.Err() != nil {
					return "", nil, ctx.Err()
				}
			}
		}
		for _, r := range results {
			what := "idle check of " + r.Proxy
			if r.TLS {
				what += " over TLS"
			}
			if r.Err != "" {
				problems = append(problems, fmt.Sprintf("%s: %s", what, r.Err))
			} else if r.StillOpen != r.Conns {
				problems = append(problems, fmt.Sprintf("%s: only %d of %d connections stayed open", what, r.StillOpen, r.Conns))
			}
		}
		tlsNote := ""
		if h.opts.idleTLS {
			tlsNote = " Over TLS: the same with HTTP/1.1 over TLS (full handshake each, ALPN http/1.1, the HTTPS phase's certificate)."
		}
		fmt.Fprintf(&b, "\n### Memory with idle connections\n\nA fresh proxy; %d keep-alive connections each carry one request and stay open; RSS (VmRSS summed over the proxy's processes) read before and with all of them open; per connection is the difference divided by the count (kB = 1,000 bytes).%s\n\n", h.opts.idleConnections, tlsNote)
		b.WriteString(idleTable(results))
		if v := idleVerdict(results); v != "" {
			b.WriteString("\n" + v + "\n")
		}
	}

	if slices.Contains(h.opts.phases, phaseSwitch) {
		var reps []switchReport
		for _, p := range proxies {
			if p == proxyHAProxy || p == proxyHTTPUtil {
				continue // the switch run compares cutover with nginx's reload
			}
			if p == proxyCutover && h.tools.cutoverNoSwitch != "" {
				msg := "cutover switch run skipped: " + h.tools.cutoverNoSwitch
				h.logf("WARNING: %s", msg)
				problems = append(problems, msg)
				continue
			}
			h.logf("switch run: %s, %d switches over %v, %d connections", p, h.opts.switches, h.opts.switchDuration, h.opts.switchConnections)
			rep := h.switchRun(ctx, p, switchOptions{Connections: h.opts.switchConnections, Duration: h.opts.switchDuration, Switches: h.opts.switches})
			if ctx.Err() != nil {
				return "", nil, ctx.Err()
			}
			h.logf("switch run: %s: %d requests, %d failed", p, rep.Summary.Requests, rep.Summary.Failed)
			reps = append(reps, rep)
		}
		problems = append(problems, switchProblems(reps, h.opts)...)
		fmt.Fprintf(&b, "\n### Switching pools under load\n\nA strict client (no retries; every socket error and non-2xx counts) keeps %d keep-alive connections busy for %v while the proxy is switched %d times between a blue and a green pool of two backends each: nginx by rewriting its upstream file and sending SIGHUP (a reload), cutover by `cutover deploy green` / `cutover rollback`. Cut-over latency: from the moment the switch command returned (cutover: the CLI exited 0; nginx: the signal was sent) to the send time of the last request that the old pool answered among those sent after that moment and before the next switch command was issued; 0 when there was none.\n\n",
			h.opts.switchConnections, h.opts.switchDuration, h.opts.switches)
		b.WriteString(switchTable(reps))
		b.WriteString("\n" + switchDetails(reps))
	}
	if slices.Contains(h.opts.phases, phaseHTTPS) {
		hp := httpsProxies(proxies)
		runs, err := h.httpsPhase(ctx, hp)
		if err != nil {
			return "", nil, err
		}
		problems = append(problems, httpsProblems(runs, hp, h.opts.httpsCases)...)
		b.WriteString(h.httpsSection(runs, hp, machine.NProc))
	}
	if slices.Contains(h.opts.phases, phaseNewConn) {
		runs, err := h.newConnPhase(ctx, proxies)
		if err != nil {
			return "", nil, err
		}
		problems = append(problems, httpsProblems(runs, proxies, []string{caseNewConn})...)
		b.WriteString(h.newConnSection(runs, proxies))
	}
	if slices.Contains(h.opts.phases, phaseSoak) {
		if h.tools.cutoverMissing != "" || h.tools.cutoverNoSwitch != "" {
			problems = append(problems, "soak skipped: cutover cannot be switched: "+h.tools.cutoverMissing+h.tools.cutoverNoSwitch)
		} else {
			section, soakProblems, err := h.soakPhase(ctx)
			if err != nil {
				return "", nil, err
			}
			problems = append(problems, soakProblems...)
			b.WriteString(section)
		}
	}
	return b.String(), problems, nil
}

// commandLine is how this run was invoked, as bench/run would be typed.
func commandLine() string {
	return strings.TrimSpace("bench/run " + strings.Join(slices.DeleteFunc(slices.Clone(os.Args[1:]), func(a string) bool {
		return strings.HasPrefix(a, "--repo=") || strings.HasPrefix(a, "-repo=")
	}), " "))
}
