package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/cutover/cutover/internal/testutil/freeport"
)

// benchPhase runs wrk against each proxy, interleaved, for every log mode.
// A run that cannot be measured is recorded with its error and the phase
// goes on; only an interrupt stops it.
func (h *harness) benchPhase(ctx context.Context, proxies []string) ([]benchRun, error) {
	var runs []benchRun
	for _, logOn := range h.opts.logModes {
		for i := 1; i <= h.opts.runs; i++ {
			for _, p := range proxies {
				r := h.benchOnce(ctx, p, logOn, i)
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				mode := "off"
				if logOn {
					mode = "on"
				}
				if r.Err != "" {
					h.logf("[log %s] run %d/%d %s: FAILED: %s", mode, i, h.opts.runs, p, r.Err)
				} else {
					h.logf("[log %s] run %d/%d %-7s %9s req/s  p50 %s  p99 %s  cpu %.2fs  %s req/cpu-s  peak %s  errors %d",
						mode, i, h.opts.runs, p, thousands(r.Wrk.ReqPerSec), ms(r.Wrk.P50), ms(r.Wrk.P99), r.CPU.Seconds(), thousands(r.perCPU()), mb(float64(r.PeakRSSKB)), r.Wrk.Errors())
				}
				runs = append(runs, r)
			}
		}
	}
	return runs, nil
}

// benchOnce starts a fresh proxy, runs wrk against it once and measures the
// proxy's CPU time and peak memory.
func (h *harness) benchOnce(ctx context.Context, proxy string, logOn bool, run int) benchRun {
	return h.measure(ctx, benchRun{Proxy: proxy, LogOn: logOn, Run: run}, nil, func(ctx context.Context, listen string) (wrkResult, time.Duration, error) {
		return h.wrk(ctx, wrkOptions{URL: "http://" + listen + "/", Threads: h.opts.threads, Connections: h.opts.connections})
	})
}

// wrk runs wrk with o and returns what it measured and the CPU time it
// used.
func (h *harness) wrk(ctx context.Context, o wrkOptions) (wrkResult, time.Duration, error) {
	out, cpu, err := h.runWrk(ctx, o)
	if err != nil {
		return wrkResult{}, 0, err
	}
	res, err := parseWrk(out)
	return res, cpu, err
}

// loadFunc drives load at a started proxy's listen address and returns
// what the load tool measured and the CPU time the tool itself used.
type loadFunc func(ctx context.Context, listen string) (wrkResult, time.Duration, error)

// measure starts a fresh proxy (over TLS when tlsFiles is set), puts load
// on it once and measures the proxy's CPU time and peak memory. r names
// the run (proxy, mode, number).
func (h *harness) measure(ctx context.Context, r benchRun, tlsFiles *tlsFiles, load loadFunc) benchRun {
	proxy, logOn := r.Proxy, r.LogOn
	r.LogLines = -1
	fail := func(err error) benchRun {
		r.Err = err.Error()
		return r
	}
	listen, err := freeport.Addr()
	if err != nil {
		return fail(err)
	}
	if h.opts.quietWait > 0 {
		h.waitQuiet(ctx, h.opts.quietWait)
	}
	dir := h.instanceDir(proxy)
	opts := proxyOptions{Proxy: proxy, Dir: dir, Listen: listen, Pools: map[string][]string{"blue": h.pool("blue")}, Active: "blue", TLS: tlsFiles}
	if logOn {
		opts.AccessLog = filepath.Join(dir, "access.log")
	}
	if h.opts.profileDir != "" && isCutover(proxy) {
		opts.CPUProfile = filepath.Join(h.opts.profileDir, fmt.Sprintf("%s-%s-run%d.pprof", proxy, profileName(r.mode()), r.Run))
	}
	rp, err := h.startProxy(ctx, opts)
	if err != nil {
		return fail(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = h.stopProxy(rp)
		}
	}()

	pid := rp.proc.PID()
	cpu0, err := treeCPU(pid, h.hz)
	if err != nil {
		return fail(fmt.Errorf("read %s CPU time: %w", proxy, err))
	}
	known0, busy0 := h.knownCPU(), h.busy()
	res, wrkCPU, err := load(ctx, listen)
	if err != nil {
		return fail(err)
	}
	known1, busy1 := h.knownCPU(), h.busy()
	cpu1, err := treeCPU(pid, h.hz)
	if err != nil {
		return fail(fmt.Errorf("read %s CPU time after the run (did it exit?): %w\n%s", proxy, err, rp.proc.logTail()))
	}
	// What the machine spent beyond the proxy, wrk, the backends and the
	// harness: a disturbed run shows here.
	if busy0 >= 0 && busy1 >= 0 {
		r.OtherCPU = max(0, (busy1-busy0)-(cpu1-cpu0)-wrkCPU-(known1-known0))
	} else {
		r.OtherCPU = -1
	}
	if r.PeakRSSKB, err = treeMemKB(pid, "VmHWM"); err != nil {
		return fail(fmt.Errorf("read %s peak memory: %w", proxy, err))
	}
	r.Wrk = res
	r.CPU = cpu1 - cpu0
	r.LoadCPU = wrkCPU

	// Stop before counting log lines so buffered log writes are flushed.
	stopped = true
	if err := h.stopProxy(rp); err != nil {
		h.logf("warning: %v", err)
	}
	if logOn {
		n, err := countLines(opts.AccessLog)
		if err != nil {
			return fail(fmt.Errorf("count %s access log lines: %w", proxy, err))
		}
		r.LogLines = n
		// The logs are only a cost to measure; a full run would fill the disk.
		_ = os.Remove(opts.AccessLog)
	}
	return r
}

// profileName makes a run's mode a file name: "HTTP/2" → "HTTP-2",
// "access log off" → "access-log-off".
func profileName(mode string) string {
	return strings.NewReplacer(" ", "-", "/", "-").Replace(mode)
}

// knownCPU is the CPU time used so far by the backends and the harness.
func (h *harness) knownCPU() time.Duration {
	var sum time.Duration
	pids := []int{os.Getpid()}
	for _, p := range h.backendProcs {
		pids = append(pids, p.PID())
	}
	for _, pid := range pids {
		if st, err := readStat(pid); err == nil {
			sum += cpuTime([]procStat{st}, h.hz)
		}
	}
	return sum
}

// busy is the machine's busy CPU time so far, -1 when unknown.
func (h *harness) busy() time.Duration {
	d, err := systemBusy(h.hz)
	if err != nil {
		return -1
	}
	return d
}

// wrkOptions are one wrk run's settings; its duration is -d.
type wrkOptions struct {
	URL                  string
	Threads, Connections int
	// Headers are extra request headers ("Connection: close").
	Headers []string
}

// wrkArgs is wrk's command line for o and a duration.
func wrkArgs(o wrkOptions, d time.Duration) []string {
	args := []string{
		fmt.Sprintf("-t%d", o.Threads),
		fmt.Sprintf("-c%d", o.Connections),
		fmt.Sprintf("-d%ds", int(d.Round(time.Second)/time.Second)),
	}
	for _, hd := range o.Headers {
		args = append(args, "-H", hd)
	}
	return append(args, "--latency", o.URL)
}

// runWrk runs wrk for -d and returns its output and the CPU time it used.
func (h *harness) runWrk(ctx context.Context, o wrkOptions) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, h.opts.duration+time.Minute)
	defer cancel()
	args := wrkArgs(o, h.opts.duration)
	cmd := exec.CommandContext(ctx, h.tools.wrk, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return "", 0, fmt.Errorf("wrk %v: %w\n%s", args, err, out.String())
	}
	return out.String(), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

func countLines(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// benchProblems are the throughput phase's failures: runs that could not be
// measured, any error in cutover's runs, and access logs
// that were not written.
func benchProblems(runs []benchRun, proxies []string, o options) []string {
	var problems []string
	measured := map[string]int{}
	for _, r := range runs {
		mode := "off"
		if r.LogOn {
			mode = "on"
		}
		if r.Err != "" {
			problems = append(problems, fmt.Sprintf("%s run %d (access log %s) failed: %s", r.Proxy, r.Run, mode, firstLine(r.Err)))
			continue
		}
		measured[r.Proxy+"/"+mode]++
		if r.Wrk.Requests == 0 {
			problems = append(problems, fmt.Sprintf("%s run %d (access log %s): wrk completed no request", r.Proxy, r.Run, mode))
		}
		if isCutover(r.Proxy) && r.Wrk.Errors() > 0 {
			problems = append(problems, fmt.Sprintf("cutover run %d (access log %s): %d errors (non-2xx %d, connect %d, read %d, write %d, timeout %d); want 0",
				r.Run, mode, r.Wrk.Errors(), r.Wrk.Non2xx, r.Wrk.Connect, r.Wrk.Read, r.Wrk.Write, r.Wrk.Timeout))
		}
		// Every completed request is logged; wrk may count a few fewer than
		// the proxy served (those in flight when it stops). Only cutover's
		// logging is asserted: HAProxy's stdout logger drops lines by design
		// when threads contend for it (its DroppedLogs counter), which
		// logShortfalls reports.
		if isCutover(r.Proxy) && r.LogOn && r.LogLines < r.Wrk.Requests {
			problems = append(problems, fmt.Sprintf("%s run %d: %d access log lines for %d requests; logging did not happen as configured", r.Proxy, r.Run, r.LogLines, r.Wrk.Requests))
		}
	}
	for _, p := range proxies {
		for _, logOn := range o.logModes {
			mode := "off"
			if logOn {
				mode = "on"
			}
			if measured[p+"/"+mode] == 0 {
				problems = append(problems, fmt.Sprintf("no measured run of %s with access log %s: its table row is empty", p, mode))
			}
		}
	}
	return problems
}

// switchProblems are the switch phase's failures: a run that could not be
// done; for cutover also any failed switch command or failed request.
func switchProblems(reps []switchReport, o options) []string {
	var problems []string
	for _, r := range reps {
		if r.Err != "" {
			problems = append(problems, fmt.Sprintf("switch run of %s failed: %s", r.Proxy, firstLine(r.Err)))
			continue
		}
		if r.Summary.Requests == 0 {
			problems = append(problems, fmt.Sprintf("switch run of %s sent no request", r.Proxy))
		}
		for i, ev := range r.Events {
			if ev.Err != "" {
				problems = append(problems, fmt.Sprintf("%s switch %d (%s → %s) failed: %s", r.Proxy, i+1, ev.From, ev.To, firstLine(ev.Err)))
			}
		}
		if len(r.Events) != o.switches {
			problems = append(problems, fmt.Sprintf("%s: %d of %d switches done", r.Proxy, len(r.Events), o.switches))
		}
		if isCutover(r.Proxy) && r.Summary.Failed > 0 {
			problems = append(problems, fmt.Sprintf("cutover switch run: %d of %d requests failed (%d non-2xx, socket errors %v); want 0",
				r.Summary.Failed, r.Summary.Requests, r.Summary.Non2xx, r.Summary.ErrorKinds))
		}
	}
	return problems
}

// logShortfalls notes the runs whose access log has fewer lines than wrk
// counted requests.
func logShortfalls(runs []benchRun) []string {
	var notes []string
	for _, r := range runs {
		if r.Err == "" && r.LogOn && r.LogLines < r.Wrk.Requests {
			notes = append(notes, fmt.Sprintf("%s run %d logged %d lines for %d requests", r.Proxy, r.Run, r.LogLines, r.Wrk.Requests))
		}
	}
	return notes
}

// quietShare is the share of the machine's CPU that other work may use for a
// run to count as undisturbed.
const quietShare = 0.10

// outsideShare measures, over one second while the harness's own programs
// idle, the share of the machine's CPU that other work uses.
func (h *harness) outsideShare(ctx context.Context) (float64, error) {
	busy0, known0 := h.busy(), h.knownCPU()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(time.Second):
	}
	busy1, known1 := h.busy(), h.knownCPU()
	if busy0 < 0 || busy1 < 0 {
		return 0, fmt.Errorf("cannot read /proc/stat")
	}
	other := (busy1 - busy0) - (known1 - known0)
	return other.Seconds() / float64(runtime.NumCPU()), nil
}

// waitQuiet waits until other work uses less than quietShare of the machine
// for two consecutive seconds, or until limit has passed.
func (h *harness) waitQuiet(ctx context.Context, limit time.Duration) {
	deadline := time.Now().Add(limit)
	quiet := 0
	var share float64
	for time.Now().Before(deadline) && quiet < 2 {
		var err error
		if share, err = h.outsideShare(ctx); err != nil {
			return
		}
		if share < quietShare {
			quiet++
		} else {
			quiet = 0
		}
	}
	if quiet < 2 {
		h.logf("other work still uses %.0f%% of the CPU after waiting %v; running anyway", share*100, limit)
	}
}

// disturbedRuns lists the runs during which other work used more than
// quietShare of the machine's CPU.
func disturbedRuns(runs []benchRun, nproc int, d time.Duration) []string {
	var notes []string
	for _, r := range runs {
		// h2load runs a request count, not -d: its own elapsed time counts.
		length := d
		if r.Case != "" && r.Wrk.Elapsed > 0 {
			length = r.Wrk.Elapsed
		}
		capacity := float64(nproc) * length.Seconds()
		if r.Err != "" || r.OtherCPU < 0 || capacity <= 0 {
			continue
		}
		if share := r.OtherCPU.Seconds() / capacity; share > quietShare {
			notes = append(notes, fmt.Sprintf("%s run %d with %s (%.0f%%)", r.Proxy, r.Run, r.mode(), share*100))
		}
	}
	return notes
}
