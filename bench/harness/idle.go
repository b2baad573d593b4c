package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/cutover/cutover/bench/loadclient"
)

// idleBarBytes is the memory bar for cutover with 1,000 idle keep-alive
// client connections: RSS under 50 MB.
const idleBarBytes = 50e6

// idleResult is the idle-connections memory check of one proxy.
type idleResult struct {
	Proxy string
	Conns int
	// BeforeKB is the proxy's RSS (all its processes) before the connections
	// were opened; WithKB with them open and idle.
	BeforeKB, WithKB int64
	// StillOpen is how many connections were still open after RSS was read.
	StillOpen int
	Err       string
}

// idleCheck starts a fresh instance of proxy, opens conns keep-alive
// connections that each carry one request and then sit idle, and reads the
// proxy's resident memory.
func (h *harness) idleCheck(ctx context.Context, proxy string, conns int) idleResult {
	res := idleResult{Proxy: proxy, Conns: conns}
	listen, err := freePort()
	if err != nil {
		res.Err = err.Error()
		return res
	}
	rp, err := h.startProxy(ctx, proxyOptions{
		Proxy:  proxy,
		Dir:    h.instanceDir(proxy + "-idle"),
		Listen: listen,
		Pools:  map[string][]string{"blue": h.pool("blue")},
		Active: "blue",
	})
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer func() {
		if err := h.stopProxy(rp); err != nil {
			h.logf("warning: %v", err)
		}
	}()
	if res.BeforeKB, err = treeMemKB(rp.proc.PID(), "VmRSS"); err != nil {
		res.Err = err.Error()
		return res
	}
	set, err := loadclient.OpenIdle(ctx, loadclient.IdleOptions{Addr: listen, Connections: conns})
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer set.Close()
	if res.WithKB, err = treeMemKB(rp.proc.PID(), "VmRSS"); err != nil {
		res.Err = err.Error()
		return res
	}
	res.StillOpen = set.StillOpen()
	return res
}

// idleTable renders the idle-connection checks.
func idleTable(results []idleResult) string {
	var b strings.Builder
	b.WriteString("| proxy | idle keep-alive connections | RSS before | RSS with them open | per connection | still open after |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		if r.Err != "" {
			fmt.Fprintf(&b, "| %s | %d | failed: %s | | | |\n", r.Proxy, r.Conns, strings.ReplaceAll(firstLine(r.Err), "|", "/"))
			continue
		}
		per := float64(r.WithKB-r.BeforeKB) * 1024 / float64(r.Conns) / 1000
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %.1f kB | %d |\n",
			r.Proxy, r.Conns, mb(float64(r.BeforeKB)), mb(float64(r.WithKB)), per, r.StillOpen)
	}
	return b.String()
}

// idleVerdict states cutover's result against the bar.
func idleVerdict(results []idleResult) string {
	for _, r := range results {
		if r.Proxy != proxyCutover || r.Err != "" {
			continue
		}
		bytes := float64(r.WithKB) * 1024
		verdict := "meets"
		if bytes >= idleBarBytes {
			verdict = "misses"
		}
		return fmt.Sprintf("cutover with %d idle connections: %s RSS, %s the bar (< 50 MB).", r.Conns, mb(float64(r.WithKB)), verdict)
	}
	return ""
}
