package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/testutil/freeport"
)

// idlePlainBarKB is issue 12's bar for cutover: at most 3 kB per idle
// plain keep-alive connection (over TLS the bar is nginx's own figure).
const idlePlainBarKB = 3.0

// idleResult is the idle-connections memory check of one proxy.
type idleResult struct {
	Proxy string
	// TLS: the connections are HTTP/1.1 over TLS.
	TLS   bool
	Conns int
	// BeforeKB is the proxy's RSS (all its processes) before the connections
	// were opened; WithKB with them open and idle.
	BeforeKB, WithKB int64
	// StillOpen is how many connections were still open after RSS was read.
	StillOpen int
	Err       string
}

// idleSpareFiles are the descriptors beyond one per connection that the
// harness's own process needs during the idle check (backends' pipes, logs,
// /proc reads).
const idleSpareFiles = 200

// raiseFileLimit raises this process's RLIMIT_NOFILE to its hard limit
// (children inherit it) and fails, naming both, when that is fewer than
// need. The proxies each hold one descriptor per client connection in
// their own processes, under the same limit.
func raiseFileLimit(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the file descriptor limit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("raise the file descriptor limit to %d: %w", lim.Max, err)
		}
	}
	if lim.Cur < need {
		return fmt.Errorf("the idle check needs %d file descriptors per process and the hard limit is %d; use a smaller -idle-c (at most %d) or raise the limit (ulimit -Hn)", need, lim.Cur, lim.Cur-idleSpareFiles)
	}
	return nil
}

// idleCheck starts a fresh instance of proxy, opens conns keep-alive
// connections (over TLS when tlsOn) that each carry one request and then
// sit idle, and reads the proxy's resident memory.
func (h *harness) idleCheck(ctx context.Context, proxy string, conns int, tlsOn bool) idleResult {
	res := idleResult{Proxy: proxy, Conns: conns, TLS: tlsOn}
	if err := raiseFileLimit(uint64(conns + idleSpareFiles)); err != nil {
		res.Err = err.Error()
		return res
	}
	listen, err := freeport.Addr()
	if err != nil {
		res.Err = err.Error()
		return res
	}
	opts := proxyOptions{
		Proxy:  proxy,
		Dir:    h.instanceDir(proxy + "-idle"),
		Listen: listen,
		Pools:  map[string][]string{"blue": h.pool("blue")},
		Active: "blue",
		// One worker of nginx may take every connection; upstream
		// connections and listeners count too.
		MaxConns: conns + idleSpareFiles,
	}
	idle := loadclient.IdleOptions{Addr: listen, Connections: conns}
	if tlsOn {
		opts.TLS = h.tls
		idle.TLS = h.tls.clientConfig()
		idle.Host = certHost
	}
	rp, err := h.startProxy(ctx, opts)
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
	set, err := loadclient.OpenIdle(ctx, idle)
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

// perConnKB is the RSS growth per idle connection in kB (10³ bytes).
func (r idleResult) perConnKB() float64 {
	return float64(r.WithKB-r.BeforeKB) * 1024 / float64(r.Conns) / 1000
}

// idleTable renders the idle-connection checks, a row per proxy with the
// plain and the TLS check side by side (the TLS columns only when a TLS
// check ran).
func idleTable(results []idleResult) string {
	var proxies []string
	byKey := map[string]idleResult{}
	anyTLS := false
	for _, r := range results {
		if !slices.Contains(proxies, r.Proxy) {
			proxies = append(proxies, r.Proxy)
		}
		byKey[fmt.Sprint(r.Proxy, r.TLS)] = r
		anyTLS = anyTLS || r.TLS
	}
	modes := []bool{false}
	if anyTLS {
		modes = append(modes, true)
	}
	var b strings.Builder
	b.WriteString("| proxy |")
	for _, tlsOn := range modes {
		m := "plain"
		if tlsOn {
			m = "TLS"
		}
		fmt.Fprintf(&b, " %[1]s: connections | %[1]s: RSS before | %[1]s: RSS with them open | %[1]s: per connection | %[1]s: still open after |", m)
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", 5*len(modes)) + "\n")
	for _, p := range proxies {
		b.WriteString("| " + p + " |")
		for _, tlsOn := range modes {
			r, ok := byKey[fmt.Sprint(p, tlsOn)]
			switch {
			case !ok:
				b.WriteString(" – | | | | |")
			case r.Err != "":
				fmt.Fprintf(&b, " %d | failed: %s | | | |", r.Conns, strings.ReplaceAll(firstLine(r.Err), "|", "/"))
			default:
				fmt.Fprintf(&b, " %d | %s | %s | %.1f kB | %d |", r.Conns, mb(float64(r.BeforeKB)), mb(float64(r.WithKB)), r.perConnKB(), r.StillOpen)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// idleVerdict states cutover's results against the bars: plain at most
// idlePlainBarKB per connection, TLS no more than nginx's per connection.
func idleVerdict(results []idleResult) string {
	find := func(proxy string, tlsOn bool) (idleResult, bool) {
		for _, r := range results {
			if r.Proxy == proxy && r.TLS == tlsOn && r.Err == "" {
				return r, true
			}
		}
		return idleResult{}, false
	}
	meets := func(ok bool) string {
		if ok {
			return "meets"
		}
		return "misses"
	}
	var parts []string
	if c, ok := find(proxyCutover, false); ok {
		parts = append(parts, fmt.Sprintf("cutover with %d idle plain connections: %s RSS, %.1f kB per connection, %s the bar (<= %.0f kB)",
			c.Conns, mb(float64(c.WithKB)), c.perConnKB(), meets(c.perConnKB() <= idlePlainBarKB), idlePlainBarKB))
	}
	if c, ok := find(proxyCutover, true); ok {
		if n, ok := find(proxyNginx, true); ok {
			parts = append(parts, fmt.Sprintf("over TLS %.1f kB per connection against nginx's %.1f kB, %s the bar (no more than nginx)",
				c.perConnKB(), n.perConnKB(), meets(c.perConnKB() <= n.perConnKB())))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, "; ") + "."
}
