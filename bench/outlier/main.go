// Command outlier measures how a cutover binary serves a pool with one bad
// target: 32 strict keep-alive clients (bench/loadclient) against a pool of
// one good target and one that is either hung (accepts connections, never
// answers anything, /healthz included) or slow (answers after -slow, while its
// /healthz passes at once). It reports the successful requests per second
// over the run and over its second half, the failed requests, latency
// percentiles and each target's share of the responses.
//
//	go build -o /tmp/cutover ./cmd/cutover
//	go run ./bench/outlier -cutover /tmp/cutover -scenario hung
//	go run ./bench/outlier -cutover /tmp/cutover -scenario slow -balance round_robin
//
// Only 127.0.0.1 is used; every listener and the cutover process end with
// the run.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/testutil/freeport"
)

type options struct {
	cutover         string
	scenario        string
	balance         string
	tryTimeout      time.Duration
	responseTimeout time.Duration
	slow            time.Duration
	duration        time.Duration
	conns           int
}

func main() {
	var o options
	flag.StringVar(&o.cutover, "cutover", "", "cutover binary to measure (required)")
	flag.StringVar(&o.scenario, "scenario", "hung", "the second target: hung (never answers), slow (answers after -slow, /healthz fast) or good (a copy of the first)")
	flag.StringVar(&o.balance, "balance", "", "services.bench.balance (empty: the binary's default)")
	flag.DurationVar(&o.tryTimeout, "try-timeout", 0, "upstream.try_timeout (0: not set)")
	flag.DurationVar(&o.responseTimeout, "response-timeout", 0, "upstream.response_timeout (0: the binary's default)")
	flag.DurationVar(&o.slow, "slow", 2*time.Second, "response delay of the slow target")
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "length of the load run")
	flag.IntVar(&o.conns, "conns", 32, "concurrent keep-alive client connections")
	flag.Parse()
	if o.cutover == "" {
		fmt.Fprintln(os.Stderr, "outlier: -cutover is required: build one with go build -o /tmp/cutover ./cmd/cutover")
		os.Exit(2)
	}
	if o.scenario != "hung" && o.scenario != "slow" && o.scenario != "good" {
		fmt.Fprintf(os.Stderr, "outlier: -scenario %q: use hung, slow or good\n", o.scenario)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "outlier:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	good, err := serveHTTP("good", 0)
	if err != nil {
		return err
	}
	defer good.Close()
	var bad io.Closer
	var badAddr string
	if o.scenario == "hung" {
		h, err := hungTarget()
		if err != nil {
			return err
		}
		bad, badAddr = h, h.ln.Addr().String()
	} else if o.scenario == "good" {
		s, err := serveHTTP("good2", 0)
		if err != nil {
			return err
		}
		bad, badAddr = s, s.Addr
	} else {
		s, err := serveHTTP("slow", o.slow)
		if err != nil {
			return err
		}
		bad, badAddr = s, s.Addr
	}
	defer bad.Close()

	dir, err := os.MkdirTemp("", "outlier-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	addr, err := freeport.Addr()
	if err != nil {
		return err
	}
	var up strings.Builder
	if o.responseTimeout > 0 {
		fmt.Fprintf(&up, "  response_timeout: %s\n", o.responseTimeout)
	}
	if o.tryTimeout > 0 {
		fmt.Fprintf(&up, "  try_timeout: %s\n", o.tryTimeout)
	}
	conf := fmt.Sprintf("listen: {http: %q}\nstate_dir: %q\nlog: {access: \"off\", level: warn}\n", addr, dir)
	if up.Len() > 0 {
		conf += "upstream:\n" + up.String()
	}
	conf += "services:\n  bench:\n"
	if o.balance != "" {
		conf += fmt.Sprintf("    balance: %s\n", o.balance)
	}
	conf += fmt.Sprintf("    pools:\n      blue: [%q, %q]\n", good.Addr, badAddr)
	confPath := filepath.Join(dir, "cutover.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}

	cmd := exec.Command(o.cutover, "serve", "-c", confPath)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	if err := waitServing(addr, 10*time.Second); err != nil {
		return err
	}

	res, err := loadclient.Run(context.Background(), loadclient.Options{
		Addr: addr, Connections: o.conns, Duration: o.duration,
		// Longer than the run: within it, a request waits as long as the
		// proxy makes it; the run does not wait for those still stuck.
		Timeout: o.duration + 5*time.Second,
		Host:    "bench",
	})
	if err != nil {
		return err
	}
	report(os.Stdout, o, res)
	return nil
}

// report prints one run's numbers. Requests are counted by when they
// completed, so the second half shows the steady state.
func report(w io.Writer, o options, res *loadclient.Result) {
	s := res.Summarize()
	half := o.duration / 2
	var ok, okLate, failed, late, lateFailed int
	var lat []time.Duration
	for _, r := range res.Records {
		if r.Done > o.duration {
			// Sent during the run, finished after it (the client waits).
			late++
			if r.Failed() {
				lateFailed++
			}
			continue
		}
		if r.Failed() {
			failed++
			continue
		}
		ok++
		if r.Done >= half {
			okLate++
		}
		lat = append(lat, r.Done-r.Sent)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(p*float64(len(lat)-1))]
	}
	bal := o.balance
	if bal == "" {
		bal = "(default)"
	}
	fmt.Fprintf(w, "scenario=%s balance=%s try_timeout=%v response_timeout=%v conns=%d duration=%v\n",
		o.scenario, bal, o.tryTimeout, o.responseTimeout, o.conns, o.duration)
	fmt.Fprintf(w, "  successful: %d (%.0f req/s over the run, %.0f req/s in its second half)\n",
		ok, float64(ok)/o.duration.Seconds(), float64(okLate)/(o.duration-half).Seconds())
	fmt.Fprintf(w, "  failed during the run: %d; finished after its end: %d (%d of them failed); all failures: non-2xx %d, socket errors %v\n",
		failed, late, lateFailed, s.Non2xx, s.ErrorKinds)
	fmt.Fprintf(w, "  latency of successes: p50 %v p99 %v max %v\n", pct(0.5), pct(0.99), pct(1))
	total := 0
	for _, n := range s.ByBackend {
		total += n
	}
	names := make([]string, 0, len(s.ByBackend))
	for n := range s.ByBackend {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  share %s: %d (%.2f%%)\n", n, s.ByBackend[n], 100*float64(s.ByBackend[n])/float64(total))
	}
}

// httpTarget is a backend answering with its name after delay; /healthz
// answers at once.
type httpTarget struct {
	*http.Server
	Addr string
}

func serveHTTP(name string, delay time.Duration) (*httpTarget, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" && delay > 0 {
				time.Sleep(delay)
			}
			w.Header().Set("X-Backend", name)
			io.WriteString(w, name)
		}),
	}
	go srv.Serve(ln)
	return &httpTarget{Server: srv, Addr: ln.Addr().String()}, nil
}

// hung accepts connections and reads what is sent, never writing a byte.
type hung struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func hungTarget() (*hung, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hung{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	return h, nil
}

func (h *hung) Close() error {
	err := h.ln.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
	return err
}

// waitServing waits until the proxy answers a request (to either target).
func waitServing(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			// The listener is up; one request shows the service routes.
			if serves(addr) {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("cutover did not start serving on " + addr)
}

func serves(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "HTTP/1.1 ")
}
