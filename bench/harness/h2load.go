package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// parseH2load reads h2load's report:
//
//	TLS Protocol: TLSv1.3
//	Cipher: TLS_AES_128_GCM_SHA256
//	Application protocol: h2
//	finished in 2.01s, 9950.50 req/s, 1.23MB/s
//	requests: 20000 total, 20000 started, 20000 done, 19998 succeeded, 2 failed, 2 errored, 0 timeout
//	status codes: 19998 2xx, 0 3xx, 0 4xx, 0 5xx
//
// into the fields the throughput tables use. Latency percentiles are not in
// this report (it gives min, max, mean and sd); parseH2loadLog reads them
// from --log-file.
func parseH2load(out string) (wrkResult, error) {
	var r wrkResult
	var haveFinished, haveRequests, haveStatus bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "TLS Protocol:"), strings.HasPrefix(line, "Cipher:"), strings.HasPrefix(line, "Server Temp Key:"), strings.HasPrefix(line, "Application protocol:"):
			if r.Protocol != "" {
				r.Protocol += ", "
			}
			r.Protocol += strings.TrimSpace(line[strings.IndexByte(line, ':')+1:])
			if strings.HasPrefix(line, "Application protocol:") {
				r.ALPN = strings.TrimSpace(strings.TrimPrefix(line, "Application protocol:"))
			}
		case strings.HasPrefix(line, "finished in "):
			// finished in 2.01s, 9950.50 req/s, 1.23MB/s
			f := strings.Split(strings.TrimPrefix(line, "finished in "), ",")
			if len(f) < 2 {
				return r, fmt.Errorf("h2load line %q: want \"finished in T, R req/s, ...\"", line)
			}
			d, err := parseH2loadDuration(strings.TrimSpace(f[0]))
			if err != nil {
				return r, fmt.Errorf("h2load line %q: %w", line, err)
			}
			rate, ok := strings.CutSuffix(strings.TrimSpace(f[1]), " req/s")
			v, err := strconv.ParseFloat(rate, 64)
			if !ok || err != nil {
				return r, fmt.Errorf("h2load line %q: no req/s figure", line)
			}
			r.Elapsed, r.ReqPerSec, haveFinished = d, v, true
		case strings.HasPrefix(line, "requests:"):
			counts, err := h2loadCounts(strings.TrimPrefix(line, "requests:"))
			if err != nil {
				return r, fmt.Errorf("h2load line %q: %w", line, err)
			}
			for _, k := range []string{"total", "done", "succeeded", "failed", "errored", "timeout"} {
				if _, ok := counts[k]; !ok {
					return r, fmt.Errorf("h2load line %q: no %q count", line, k)
				}
			}
			// Requests is what completed with 2xx, the figure every table
			// divides by; a request h2load never finished (-n not reached)
			// is an error, not a success.
			r.Requests = counts["succeeded"]
			r.Failed, r.Errored, r.Timeout = counts["failed"], counts["errored"], counts["timeout"]
			r.NotDone = counts["total"] - counts["done"]
			haveRequests = true
		case strings.HasPrefix(line, "status codes:"):
			counts, err := h2loadCounts(strings.TrimPrefix(line, "status codes:"))
			if err != nil {
				return r, fmt.Errorf("h2load line %q: %w", line, err)
			}
			r.Non2xx = counts["3xx"] + counts["4xx"] + counts["5xx"]
			haveStatus = true
		}
	}
	var missing []string
	for _, m := range []struct {
		ok   bool
		name string
	}{{haveFinished, "\"finished in\""}, {haveRequests, "\"requests:\""}, {haveStatus, "\"status codes:\""}} {
		if !m.ok {
			missing = append(missing, m.name)
		}
	}
	if len(missing) > 0 {
		return r, fmt.Errorf("h2load output lacks %s:\n%s", strings.Join(missing, ", "), out)
	}
	return r, nil
}

// h2loadCounts parses "20000 total, 20000 started, 0 failed" into a map.
func h2loadCounts(s string) (map[string]int64, error) {
	counts := map[string]int64{}
	for part := range strings.SplitSeq(s, ",") {
		f := strings.Fields(part)
		if len(f) != 2 {
			return nil, fmt.Errorf("count %q: want \"N name\"", strings.TrimSpace(part))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("count %q: %w", strings.TrimSpace(part), err)
		}
		counts[f[1]] = n
	}
	return counts, nil
}

// parseH2loadDuration parses h2load's "finished in" time: a number with
// ms or s (and us, m, h for completeness).
func parseH2loadDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("duration %q: not a non-negative number of %s", s, u.suffix)
			}
			return time.Duration(v * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("duration %q: no unit", s)
}

// parseH2loadLog reads h2load's --log-file (per request, tab-separated:
// start time in µs since the epoch, status, µs until the end of the
// response; status -1 for a failed stream) and returns the p50 and p99 of
// the completed requests' times and how many there were.
func parseH2loadLog(r io.Reader) (p50, p99 time.Duration, n int, err error) {
	var us []int64
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Split(sc.Text(), "\t")
		if len(f) < 3 {
			return 0, 0, 0, fmt.Errorf("h2load log line %d %q: want 3 tab-separated columns", line, sc.Text())
		}
		status, err1 := strconv.Atoi(f[1])
		elapsed, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, 0, fmt.Errorf("h2load log line %d %q: status and time must be integers", line, sc.Text())
		}
		if status < 0 {
			continue
		}
		us = append(us, elapsed)
	}
	if err := sc.Err(); err != nil {
		return 0, 0, 0, fmt.Errorf("read h2load log: %w", err)
	}
	if len(us) == 0 {
		return 0, 0, 0, fmt.Errorf("h2load log has no completed request")
	}
	slices.Sort(us)
	pct := func(p float64) time.Duration {
		// Nearest rank: the smallest value with at least p of them at or below it.
		i := int(float64(len(us))*p+0.999999) - 1
		return time.Duration(us[max(0, min(i, len(us)-1))]) * time.Microsecond
	}
	return pct(0.50), pct(0.99), len(us), nil
}

// readH2loadLog is parseH2loadLog on a file.
func readH2loadLog(path string) (p50, p99 time.Duration, n int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	return parseH2loadLog(f)
}
