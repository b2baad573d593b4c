package main

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what the harness reads from `wrk --latency` output.
type wrkResult struct {
	Requests  int64
	Elapsed   time.Duration
	ReqPerSec float64
	P50, P99  time.Duration
	// Non2xx counts wrk's "Non-2xx or 3xx responses".
	Non2xx int64
	// Socket errors by kind as wrk reports them (h2load: Timeout).
	Connect, Read, Write, Timeout int64

	// From h2load only: its "failed" count (which includes non-2xx and
	// errored), "errored" (stream resets, connection errors) and the
	// requests of -n it never completed.
	Failed, Errored, NotDone int64
	// Protocol is what h2load negotiated (TLS version, cipher, ALPN);
	// ALPN alone too, to check that HTTP/2 was spoken.
	Protocol, ALPN string
}

// Errors is every request wrk or h2load counted as failed, each once:
// h2load's failed already contains its non-2xx and errored requests.
func (r wrkResult) Errors() int64 {
	counted := r.Non2xx + r.Errored + r.Timeout
	return counted + max(0, r.Failed-counted) + r.Connect + r.Read + r.Write + r.NotDone
}

// errorDetail names the kinds of r's errors ("" when there are none).
func (r wrkResult) errorDetail() string {
	var parts []string
	for _, k := range []struct {
		name string
		n    int64
	}{{"non-2xx", r.Non2xx}, {"connect", r.Connect}, {"read", r.Read}, {"write", r.Write}, {"timeout", r.Timeout},
		{"failed", r.Failed}, {"errored", r.Errored}, {"not completed", r.NotDone}} {
		if k.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k.name, k.n))
		}
	}
	return strings.Join(parts, ", ")
}

// parseWrk reads the report wrk prints with --latency:
//
//	  Latency Distribution
//	     50%  627.00us
//	     99%    3.12ms
//	  652611 requests in 15.10s, 135.81MB read
//	  Non-2xx or 3xx responses: 3
//	  Socket errors: connect 0, read 2, write 0, timeout 0
//	Requests/sec:  43223.71
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveReqs, haveRate, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, fmt.Errorf("wrk latency line %q: %w", line, err)
			}
			if f[0] == "50%" {
				r.P50, have50 = d, true
			} else {
				r.P99, have99 = d, true
			}
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk requests line %q: %w", line, err)
			}
			d, err := parseWrkDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return r, fmt.Errorf("wrk requests line %q: %w", line, err)
			}
			r.Requests, r.Elapsed, haveReqs = n, d, true
		case strings.HasPrefix(line, "Requests/sec:"):
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
			if err != nil {
				return r, fmt.Errorf("wrk rate line %q: %w", line, err)
			}
			r.ReqPerSec, haveRate = v, true
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "Non-2xx or 3xx responses:")), 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk non-2xx line %q: %w", line, err)
			}
			r.Non2xx = n
		case strings.HasPrefix(line, "Socket errors:"):
			for part := range strings.SplitSeq(strings.TrimPrefix(line, "Socket errors:"), ",") {
				kv := strings.Fields(part)
				if len(kv) != 2 {
					return r, fmt.Errorf("wrk socket errors line %q: part %q", line, part)
				}
				n, err := strconv.ParseInt(kv[1], 10, 64)
				if err != nil {
					return r, fmt.Errorf("wrk socket errors line %q: %w", line, err)
				}
				switch kv[0] {
				case "connect":
					r.Connect = n
				case "read":
					r.Read = n
				case "write":
					r.Write = n
				case "timeout":
					r.Timeout = n
				default:
					return r, fmt.Errorf("wrk socket errors line %q: unknown kind %q", line, kv[0])
				}
			}
		}
	}
	var missing []string
	for _, m := range []struct {
		ok   bool
		name string
	}{{haveReqs, "\"N requests in T\""}, {haveRate, "Requests/sec"}, {have50, "50% latency"}, {have99, "99% latency"}} {
		if !m.ok {
			missing = append(missing, m.name)
		}
	}
	if len(missing) > 0 {
		return r, fmt.Errorf("wrk output lacks %s (was wrk run with --latency?):\n%s", strings.Join(missing, ", "), out)
	}
	return r, nil
}

// parseWrkDuration parses wrk's time format: a number followed by us, ms, s,
// m or h (wrk never prints ns).
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(num, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("wrk duration %q: not a non-negative number of %s", s, u.suffix)
		}
		return time.Duration(v * float64(u.unit)), nil
	}
	return 0, fmt.Errorf("wrk duration %q: no unit (us, ms, s, m, h)", s)
}
