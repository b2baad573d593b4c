package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cutover/cutover/bench/soak"
)

// soakPhase runs cutover alone for -d with a switch every second, a live
// backend killed every 3 s and a reload every 2 s (bench/soak), and reports
// failed requests, memory and descriptors.
func (h *harness) soakPhase(ctx context.Context) (string, []string, error) {
	dir := h.instanceDir("cutover-soak")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	h.logf("soak: cutover for %v, %d connections", h.opts.duration, h.opts.switchConnections)
	res, err := soak.Run(ctx, soak.Options{
		Cutover:     h.tools.cutover,
		Backend:     h.tools.backend,
		Dir:         dir,
		Duration:    h.opts.duration,
		Connections: h.opts.switchConnections,
		Logf:        h.logf,
	})
	if err != nil {
		return "", nil, fmt.Errorf("soak: %w", err)
	}
	s := res.Summary
	h.logf("soak: %d requests, %d failed", s.Requests, s.Failed)
	var problems []string
	if s.Failed > 0 {
		problems = append(problems, fmt.Sprintf("soak: %d of %d requests failed (%v)", s.Failed, s.Requests, s.ErrorKinds))
	}
	for _, e := range res.Errors {
		problems = append(problems, "soak: "+e)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\n### Soak\n\ncutover alone for %v: a strict client (no retries) on %d keep-alive connections; `cutover deploy` to the other pool every second, one of the live pool's two backends killed with SIGKILL every 3 s (restarted 300 ms later), `cutover reload` every 2 s. RSS is VmRSS of `cutover serve`, fds its open descriptors, read every second.\n\n", h.opts.duration, h.opts.switchConnections)
	b.WriteString("| requests | failed | req/s | switches (failed) | kills | reloads (failed) | RSS first → peak → last | fds first → peak → last |\n|---:|---:|---:|---:|---:|---:|---|---|\n")
	var first soak.Sample
	if len(res.Samples) > 0 {
		first = res.Samples[0]
	}
	peakRSS, peakFDs := res.Peak(0)
	last := res.Last()
	fmt.Fprintf(&b, "| %d | %d | %.0f | %d (%d) | %d | %d (%d) | %s → %s → %s | %d → %d → %d |\n",
		s.Requests, s.Failed, float64(s.Requests)/res.Elapsed.Seconds(), res.Switches, res.SwitchErrors, res.Kills, res.Reloads, res.ReloadErrors,
		mb(float64(first.RSSKB)), mb(float64(peakRSS)), mb(float64(last.RSSKB)), first.FDs, peakFDs, last.FDs)
	if len(res.Samples) > 1 {
		b.WriteString("\n<details><summary>RSS and descriptors over time</summary>\n\n| at | RSS | fds |\n|---:|---:|---:|\n")
		step := max(1, len(res.Samples)/30)
		for i := 0; i < len(res.Samples); i += step {
			smp := res.Samples[i]
			fmt.Fprintf(&b, "| %v | %s | %d |\n", smp.At.Round(time.Second), mb(float64(smp.RSSKB)), smp.FDs)
		}
		b.WriteString("\n</details>\n")
	}
	if len(res.Failures) > 0 {
		b.WriteString("\nFirst failed requests:\n\n")
		for _, f := range res.Failures {
			fmt.Fprintf(&b, "- sent at %v: status %d, error %q\n", f.Sent.Round(time.Millisecond), f.Status, f.Err)
		}
	}
	return b.String(), problems, nil
}
