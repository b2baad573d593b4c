package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// caseNewConn is the newconn phase's one case: plain HTTP/1.1, a new TCP
// connection per request. The throughput phase keeps its connections
// alive, so it never pays for accepting one; a client that does not
// (scripts, health checkers, some load balancers) pays for it per request.
const caseNewConn = "new plain connection per request"

// newConnPhase runs caseNewConn against each proxy, interleaved, -runs
// times, access log off.
func (h *harness) newConnPhase(ctx context.Context, proxies []string) ([]benchRun, error) {
	return h.caseRuns(ctx, proxies, caseNewConn, nil, func(ctx context.Context, listen string) (wrkResult, time.Duration, error) {
		return h.wrk(ctx, wrkOptions{URL: "http://" + listen + "/", Threads: h.opts.threads,
			Connections: h.opts.handshakeConnections, Headers: []string{"Connection: close"}})
	})
}

// newConnSection is the newconn phase's part of the report.
func (h *harness) newConnSection(runs []benchRun, proxies []string) string {
	var b strings.Builder
	secs := int(h.opts.duration.Round(time.Second) / time.Second)
	fmt.Fprintf(&b, "\n### New plain connection per request\n\n`wrk -t%d -c%d -d%ds --latency -H 'Connection: close'` over plain HTTP/1.1, the throughput phase's backends; access log off; runs interleaved; median of %d run(s) each.\n\n",
		h.opts.threads, h.opts.handshakeConnections, secs, h.opts.runs)
	b.WriteString(benchTable(summarize(runs, proxies, false)))
	b.WriteString("\n<details><summary>Every run</summary>\n\n")
	b.WriteString(runsTable(runs))
	b.WriteString("\n</details>\n")
	return b.String()
}
