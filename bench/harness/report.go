package main

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// benchRun is one wrk run against one proxy.
type benchRun struct {
	Proxy string
	LogOn bool
	// Case is the HTTPS phase's workload ("": the plain throughput phase).
	Case string
	Run  int // 1-based
	Wrk  wrkResult
	// CPU is the proxy's user+system time during the run (all its processes).
	CPU time.Duration
	// PeakRSSKB is VmHWM summed over the proxy's processes, in kB.
	PeakRSSKB int64
	// LogLines is the number of access log lines written (-1: logging off).
	LogLines int64
	// OtherCPU is the CPU time the machine spent during the run outside the
	// proxy, wrk, the backends and the harness (-1: unknown).
	OtherCPU time.Duration
	// LoadCPU is the user+system time of the load tool (wrk or h2load)
	// during the run. It shares the machine's cores with the proxy, and
	// it is not a constant per request: wrk busy-waits on a connection
	// whose TLS handshake is still under way (it polls a writable socket
	// until the server's flight arrives), so a proxy that answers a
	// handshake later leaves it less CPU.
	LoadCPU time.Duration
	// Err is set when the run could not be measured.
	Err string
}

// mode names what the run measured: "access log off", "access log on" or
// its HTTPS case.
func (r benchRun) mode() string {
	switch {
	case r.Case != "":
		return r.Case
	case r.LogOn:
		return "access log on"
	default:
		return "access log off"
	}
}

// loadPerReq is the load tool's CPU time per request; 0 when unknown.
func (r benchRun) loadPerReq() time.Duration {
	if r.Wrk.Requests <= 0 {
		return 0
	}
	return r.LoadCPU / time.Duration(r.Wrk.Requests)
}

// perCPU is requests per proxy CPU-second.
func (r benchRun) perCPU() float64 {
	if r.CPU <= 0 {
		return 0
	}
	return float64(r.Wrk.Requests) / r.CPU.Seconds()
}

// benchRow is the median over a proxy's runs in one log mode.
type benchRow struct {
	Proxy          string
	Runs           int // measured runs
	ReqPerSec      float64
	P50, P99       time.Duration
	CPUSeconds     float64
	PerCPU         float64
	PeakRSSKB      float64
	RatioReqPerSec float64 // to nginx's median; NaN without nginx
	RatioPerCPU    float64
	Errors         int64 // wrk errors summed over all runs
	Failed         int   // runs that could not be measured
}

// median of xs (the mean of the middle two for an even count); NaN when empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// summarize computes one row per proxy (in the given order) for the runs
// with the given log mode; proxies without runs are left out.
func summarize(runs []benchRun, proxies []string, logOn bool) []benchRow {
	var rows []benchRow
	for _, p := range proxies {
		row := benchRow{Proxy: p}
		var rps, p50, p99, cpu, per, rss []float64
		seen := false
		for _, r := range runs {
			if r.Proxy != p || r.LogOn != logOn {
				continue
			}
			seen = true
			if r.Err != "" {
				row.Failed++
				continue
			}
			row.Runs++
			row.Errors += r.Wrk.Errors()
			rps = append(rps, r.Wrk.ReqPerSec)
			p50 = append(p50, float64(r.Wrk.P50))
			p99 = append(p99, float64(r.Wrk.P99))
			cpu = append(cpu, r.CPU.Seconds())
			per = append(per, r.perCPU())
			rss = append(rss, float64(r.PeakRSSKB))
		}
		if !seen {
			continue
		}
		row.ReqPerSec = median(rps)
		row.P50 = time.Duration(median(p50))
		row.P99 = time.Duration(median(p99))
		row.CPUSeconds = median(cpu)
		row.PerCPU = median(per)
		row.PeakRSSKB = median(rss)
		rows = append(rows, row)
	}
	base := math.NaN()
	baseCPU := math.NaN()
	for _, r := range rows {
		if r.Proxy == proxyNginx && r.Runs > 0 {
			base, baseCPU = r.ReqPerSec, r.PerCPU
		}
	}
	for i := range rows {
		rows[i].RatioReqPerSec = rows[i].ReqPerSec / base
		rows[i].RatioPerCPU = rows[i].PerCPU / baseCPU
	}
	return rows
}

// benchTable renders rows as a markdown table.
func benchTable(rows []benchRow) string {
	var b strings.Builder
	b.WriteString("| proxy | req/s | p50 | p99 | proxy CPU-s | req per proxy CPU-s | peak RSS | vs nginx: req/s | vs nginx: per CPU-s | errors |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		if r.Runs == 0 {
			fmt.Fprintf(&b, "| %s | – | – | – | – | – | – | – | – | %d runs failed |\n", r.Proxy, r.Failed)
			continue
		}
		errs := strconv.FormatInt(r.Errors, 10)
		if r.Failed > 0 {
			errs += fmt.Sprintf(" (+%d runs failed)", r.Failed)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.1f | %s | %s | %s | %s | %s |\n",
			r.Proxy, thousands(r.ReqPerSec), ms(r.P50), ms(r.P99), r.CPUSeconds, thousands(r.PerCPU),
			mb(r.PeakRSSKB), ratio(r.RatioReqPerSec), ratio(r.RatioPerCPU), errs)
	}
	return b.String()
}

// runsTable lists every run, for the record behind the medians.
// The first column is the access log mode (off/on), or the HTTPS case.
func runsTable(runs []benchRun) string {
	var b strings.Builder
	first := "access log"
	if len(runs) > 0 && runs[0].Case != "" {
		first = "case"
	}
	fmt.Fprintf(&b, "| %s | run | proxy | requests | req/s | p50 | p99 | proxy CPU-s | req per CPU-s | peak RSS | errors | log lines | other CPU-s | load tool µs per req |\n", first)
	b.WriteString("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range runs {
		mode := r.Case
		switch {
		case mode != "":
		case r.LogOn:
			mode = "on"
		default:
			mode = "off"
		}
		if r.Err != "" {
			fmt.Fprintf(&b, "| %s | %d | %s | failed: %s | | | | | | | | | | |\n", mode, r.Run, r.Proxy, strings.ReplaceAll(firstLine(r.Err), "|", "/"))
			continue
		}
		lines := "–"
		if r.LogLines >= 0 {
			lines = strconv.FormatInt(r.LogLines, 10)
		}
		errs := strconv.FormatInt(r.Wrk.Errors(), 10)
		if d := r.Wrk.errorDetail(); d != "" {
			errs += " (" + d + ")"
		}
		other := "–"
		if r.OtherCPU >= 0 {
			other = fmt.Sprintf("%.2f", r.OtherCPU.Seconds())
		}
		load := "–"
		if d := r.loadPerReq(); d > 0 {
			load = fmt.Sprintf("%.1f", float64(d)/float64(time.Microsecond))
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %d | %s | %s | %s | %.2f | %s | %s | %s | %s | %s | %s |\n",
			mode, r.Run, r.Proxy, r.Wrk.Requests, thousands(r.Wrk.ReqPerSec), ms(r.Wrk.P50), ms(r.Wrk.P99),
			r.CPU.Seconds(), thousands(r.perCPU()), mb(float64(r.PeakRSSKB)), errs, lines, other, load)
	}
	return b.String()
}

// thousands formats a rate as an integer with comma separators.
func thousands(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// ms formats a latency in milliseconds.
// A load tool that measures no latency (s_time) leaves it 0, shown as –.
func ms(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// mb formats kB (KiB, as /proc reports them) as decimal megabytes, the unit
// the memory bar is stated in.
func mb(kb float64) string {
	if math.IsNaN(kb) {
		return "–"
	}
	return fmt.Sprintf("%.1f MB", kb*1024/1e6)
}

func ratio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
