package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The handshake case with wrk measures more than the proxy: wrk keeps a
// connection whose TLS handshake is under way registered for writability,
// so it calls SSL_connect again and again until the server's flight
// arrives. On a machine it shares with the proxy, the longer a proxy takes
// to answer a ClientHello, the more CPU wrk burns and the less is left to
// the proxy (measured: 97 reads per connection against nginx and 156
// against cutover). openssl s_time waits in a blocking read instead, so
// the same workload with it shows handshakes per second without that
// feedback. It resumes sessions as wrk does (-reuse).

// sTimeOptions are one blocking-client run's settings.
type sTimeOptions struct {
	Addr string
	// Clients is how many s_time processes run side by side.
	Clients  int
	Duration time.Duration
}

// sTimeArgs is one s_time process's command line.
func sTimeArgs(o sTimeOptions) []string {
	return []string{"s_time", "-connect", o.Addr, "-www", "/", "-reuse",
		"-time", strconv.Itoa(max(1, int(o.Duration.Round(time.Second)/time.Second)))}
}

// sTimeLine is s_time's summary of its timed connections.
var sTimeLine = regexp.MustCompile(`(?m)^(\d+) connections in \d+ real seconds, (\d+) bytes read per connection`)

// parseSTime returns the connections one s_time process completed and the
// bytes it read per connection.
func parseSTime(out string) (conns, perConn int64, err error) {
	m := sTimeLine.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("no %q line in s_time's output:\n%s", "N connections in S real seconds", tail(out, 10))
	}
	conns, _ = strconv.ParseInt(m[1], 10, 64)
	perConn, _ = strconv.ParseInt(m[2], 10, 64)
	return conns, perConn, nil
}

// runSTime runs o.Clients s_time processes at once and sums their rates.
// s_time stops at the first whole second of its clock past -time, so it
// times between -time and -time+1 seconds; each process's rate is over
// its own wall time, start-up (a few milliseconds) included.
// s_time does not look at HTTP statuses: a connection that read nothing
// counts as an error (Read), and the wrk case of the same workload checks
// the statuses.
func (h *harness) runSTime(ctx context.Context, o sTimeOptions) (wrkResult, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Duration+time.Minute)
	defer cancel()
	type result struct {
		conns, perConn int64
		cpu, wall      time.Duration
		err            error
	}
	results := make([]result, o.Clients)
	var wg sync.WaitGroup
	for i := range o.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, h.tools.openssl, sTimeArgs(o)...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			r := &results[i]
			start := time.Now()
			r.err = cmd.Run()
			r.wall = time.Since(start)
			if r.err != nil {
				r.err = fmt.Errorf("openssl %v: %w\n%s", sTimeArgs(o), r.err, tail(out.String(), 10))
				return
			}
			r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			r.conns, r.perConn, r.err = parseSTime(out.String())
		}()
	}
	wg.Wait()
	var res wrkResult
	var cpu, wall time.Duration
	for _, r := range results {
		if r.err != nil {
			return wrkResult{}, 0, r.err
		}
		res.Requests += r.conns
		res.ReqPerSec += float64(r.conns) / r.wall.Seconds()
		cpu += r.cpu
		wall = max(wall, r.wall)
		if r.perConn == 0 {
			res.Read += r.conns
		}
	}
	res.Elapsed = wall
	return res, cpu, nil
}
