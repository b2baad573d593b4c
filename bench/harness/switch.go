package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/testutil/freeport"
)

// switchEvent is one switch of the live pool during the switch run.
type switchEvent struct {
	// Began is when the switch command was issued.
	Began time.Time
	// At is when the switch command had returned: for cutover, `deploy` or
	// `rollback` exited 0; for nginx, the reload signal was sent.
	At       time.Time
	From, To string
	// Took is how long the switch command ran.
	Took time.Duration
	// Err is set when the switch command failed.
	Err string
}

// switchReport is the outcome of the switch run for one proxy.
type switchReport struct {
	Proxy    string
	Events   []switchEvent
	Summary  loadclient.Summary
	Duration time.Duration
	// Latency per switch: see switchLatencies. OldAfter counts, per switch,
	// the responses from the old pool to requests sent after it.
	Latency  []time.Duration
	OldAfter []int
	// Err is set when the run itself could not be done.
	Err string
}

// colour is the pool part of a backend name: "blue-1" → "blue".
func colour(backend string) string {
	c, _, _ := strings.Cut(backend, "-")
	return c
}

// switchLatencies computes each switch's cut-over latency: the latest send
// time, after the switch, of a request that the old pool answered, minus the
// switch time, floored at 0. Only requests sent before the next switch
// command was issued count towards a switch: from then on the old pool of
// this switch may rightly be the new pool of the next one. recs must be sorted by Sent (loadclient.Run sorts them),
// offsets are from start. oldAfter counts those old-pool answers per switch.
// A failed switch gets latency 0 and no count.
func switchLatencies(recs []loadclient.Record, start time.Time, events []switchEvent) (latency []time.Duration, oldAfter []int) {
	latency = make([]time.Duration, len(events))
	oldAfter = make([]int, len(events))
	for i, ev := range events {
		if ev.Err != "" {
			continue
		}
		from := ev.At.Sub(start)
		to := time.Duration(1<<63 - 1)
		if i+1 < len(events) {
			to = events[i+1].Began.Sub(start)
		}
		first := sort.Search(len(recs), func(j int) bool { return recs[j].Sent >= from })
		for _, r := range recs[first:] {
			if r.Sent >= to {
				break
			}
			if r.Failed() || colour(r.Backend) != ev.From {
				continue
			}
			oldAfter[i]++
			if d := r.Sent - from; d > latency[i] {
				latency[i] = d
			}
		}
	}
	return latency, oldAfter
}

// switchOptions configure the switch run.
type switchOptions struct {
	Connections int
	Duration    time.Duration
	Switches    int
}

// switchRun runs the strict load client against a fresh instance of proxy
// with blue and green pools while switching it between them opts.Switches
// times, spread evenly over opts.Duration.
func (h *harness) switchRun(ctx context.Context, proxy string, opts switchOptions) switchReport {
	rep := switchReport{Proxy: proxy}
	fail := func(err error) switchReport {
		rep.Err = err.Error()
		return rep
	}
	listen, err := freeport.Addr()
	if err != nil {
		return fail(err)
	}
	rp, err := h.startProxy(ctx, proxyOptions{
		Proxy:  proxy,
		Dir:    h.instanceDir(proxy + "-switch"),
		Listen: listen,
		Pools:  map[string][]string{"blue": h.pool("blue"), "green": h.pool("green")},
		Active: "blue",
	})
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := h.stopProxy(rp); err != nil {
			h.logf("warning: %v", err)
		}
	}()

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	type loadResult struct {
		res *loadclient.Result
		err error
	}
	done := make(chan loadResult, 1)
	began := time.Now()
	go func() {
		// The hard bound only matters if switch commands hang; normally the
		// load is stopped below once the switches are done.
		res, err := loadclient.Run(loadCtx, loadclient.Options{
			Addr:        listen,
			Connections: opts.Connections,
			Duration:    opts.Duration + 5*time.Minute,
		})
		done <- loadResult{res, err}
	}()

	spacing := opts.Duration / time.Duration(opts.Switches+1)
	current := "blue"
	for i := range opts.Switches {
		wait := time.Until(began.Add(time.Duration(i+1) * spacing))
		select {
		case <-ctx.Done():
			stopLoad()
			<-done
			return fail(ctx.Err())
		case <-time.After(wait):
		}
		next := "green"
		if current == "green" {
			next = "blue"
		}
		ev := h.doSwitch(ctx, rp, current, next, i)
		rep.Events = append(rep.Events, ev)
		if ev.Err == "" {
			current = next
		} else {
			h.logf("%s switch %d (%s → %s) failed: %s", proxy, i+1, current, next, ev.Err)
		}
	}
	// Keep the load on for the rest of the period, and at least one spacing
	// after the last switch so its cut-over can be seen.
	tail := time.Until(began.Add(opts.Duration))
	if tail < spacing {
		tail = spacing
	}
	select {
	case <-ctx.Done():
	case <-time.After(tail):
	}
	stopLoad()
	lr := <-done
	if lr.err != nil {
		return fail(lr.err)
	}
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	rep.Duration = lr.res.Elapsed
	rep.Summary = lr.res.Summarize()
	rep.Latency, rep.OldAfter = switchLatencies(lr.res.Records, lr.res.Start, rep.Events)
	return rep
}

// doSwitch switches rp from one pool to the other once.
func (h *harness) doSwitch(ctx context.Context, rp *runningProxy, from, to string, i int) switchEvent {
	ev := switchEvent{From: from, To: to, Began: time.Now()}
	start := ev.Began
	switch rp.opts.Proxy {
	case proxyNginx:
		// What the seed's deploy script does: rewrite the upstream, reload.
		if err := writeFileAtomic(rp.upstreamPath, nginxUpstream(rp.opts.Pools[to])); err != nil {
			ev.Err = err.Error()
			return ev
		}
		start = time.Now()
		if err := syscall.Kill(rp.proc.PID(), syscall.SIGHUP); err != nil {
			ev.Err = fmt.Sprintf("send SIGHUP to nginx master %d: %v", rp.proc.PID(), err)
			return ev
		}
	case proxyCutover, proxyCutoverMetrics, proxyCutoverGoroutines:
		args := []string{"deploy", to, "-c", rp.configPath}
		if to == rp.opts.Active {
			args = []string{"rollback", "-c", rp.configPath}
		}
		cmdCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cmdCtx, h.tools.cutover, args...)
		outPath := filepath.Join(rp.opts.Dir, fmt.Sprintf("switch-%02d.out", i+1))
		out, err := os.Create(outPath)
		if err != nil {
			ev.Err = err.Error()
			return ev
		}
		defer out.Close()
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Run(); err != nil {
			b, _ := os.ReadFile(outPath)
			ev.Err = fmt.Sprintf("cutover %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(b)))
			return ev
		}
	default:
		ev.Err = fmt.Sprintf("the switch run does not support %s", rp.opts.Proxy)
		return ev
	}
	ev.At = time.Now()
	ev.Took = ev.At.Sub(start)
	return ev
}

// switchTable renders the switch run reports.
func switchTable(reps []switchReport) string {
	var b strings.Builder
	b.WriteString("| proxy | switches | requests | failed | failed per switch | cut-over latency: median | max | each switch (ms) | switch command (median) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|---:|\n")
	for _, r := range reps {
		if r.Err != "" {
			fmt.Fprintf(&b, "| %s | run failed: %s | | | | | | | |\n", r.Proxy, strings.ReplaceAll(firstLine(r.Err), "|", "/"))
			continue
		}
		ok := 0
		var lat, took []float64
		var each []string
		for i, ev := range r.Events {
			if ev.Err != "" {
				each = append(each, "failed")
				continue
			}
			ok++
			l := float64(r.Latency[i]) / float64(time.Millisecond)
			lat = append(lat, l)
			took = append(took, float64(ev.Took)/float64(time.Millisecond))
			each = append(each, fmt.Sprintf("%.0f", l))
		}
		switches := fmt.Sprint(ok)
		if ok != len(r.Events) {
			switches = fmt.Sprintf("%d of %d", ok, len(r.Events))
		}
		perSwitch := "–"
		if ok > 0 {
			perSwitch = fmt.Sprintf("%.1f", float64(r.Summary.Failed)/float64(ok))
		}
		maxLat := maxOf(lat)
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %s | %s | %s | %s | %s |\n",
			r.Proxy, switches, r.Summary.Requests, r.Summary.Failed, perSwitch,
			msf(median(lat)), msf(maxLat), strings.Join(each, ", "), msf(median(took)))
	}
	return b.String()
}

// switchDetails lists error kinds and old-pool answers after each switch.
func switchDetails(reps []switchReport) string {
	var b strings.Builder
	for _, r := range reps {
		if r.Err != "" {
			continue
		}
		kinds := make([]string, 0, len(r.Summary.ErrorKinds))
		for k, n := range r.Summary.ErrorKinds {
			kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
		}
		sort.Strings(kinds)
		if len(kinds) == 0 {
			kinds = []string{"none"}
		}
		fmt.Fprintf(&b, "- %s: %d requests in %.1fs; socket errors: %s; non-2xx: %d; old-pool answers to requests sent after each switch: %v\n",
			r.Proxy, r.Summary.Requests, r.Duration.Seconds(), strings.Join(kinds, ", "), r.Summary.Non2xx, r.OldAfter)
	}
	return b.String()
}

func maxOf(xs []float64) float64 {
	if len(xs) == 0 {
		return median(nil)
	}
	m := xs[0]
	for _, x := range xs[1:] {
		if x > m {
			m = x
		}
	}
	return m
}

func msf(v float64) string {
	if v != v { // NaN
		return "–"
	}
	return fmt.Sprintf("%.1f ms", v)
}
