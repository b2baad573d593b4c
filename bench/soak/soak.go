// Package soak runs the real cutover binary under steady load while it is
// switched between pools, its backends are killed with SIGKILL and
// restarted, and its configuration is reloaded, and records every request
// and the proxy's memory and file descriptors. test/reliability runs a short
// soak in CI; `bench/run -phases soak -d 10m` runs a long one and reports it.
package soak

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/testutil/freeport"
)

// Options configure a soak run. Cutover, Backend and Dir are required.
type Options struct {
	// Cutover and Backend are the cutover and bench/backend binaries.
	Cutover, Backend string
	// Dir is an empty scratch folder: configuration, state, logs.
	Dir string
	// Duration is how long the load runs (default 20s).
	Duration time.Duration
	// Connections is the load client's keep-alive connections (default 16).
	Connections int
	// SwitchEvery is the time between two switches of the live pool
	// (default 1s); KillEvery between two SIGKILLs of a live backend
	// (default 3s); ReloadEvery between two `cutover reload`s (default 2s);
	// SampleEvery between two readings of RSS and descriptors (default 1s).
	SwitchEvery, KillEvery, ReloadEvery, SampleEvery time.Duration
	// Logf, when set, receives progress lines.
	Logf func(format string, args ...any)
}

func (o *Options) defaults() error {
	if o.Cutover == "" || o.Backend == "" || o.Dir == "" {
		return errors.New("soak: Options.Cutover, Backend and Dir are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Duration, 20*time.Second)
	def(&o.SwitchEvery, time.Second)
	def(&o.KillEvery, 3*time.Second)
	def(&o.ReloadEvery, 2*time.Second)
	def(&o.SampleEvery, time.Second)
	if o.Connections <= 0 {
		o.Connections = 16
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// Sample is one reading of the proxy process.
type Sample struct {
	// At is the offset from the start of the load.
	At time.Duration
	// RSSKB is VmRSS in kB; FDs the open file descriptors.
	RSSKB int64
	FDs   int
}

// Result is what a soak run saw.
type Result struct {
	Summary loadclient.Summary
	Elapsed time.Duration
	// Switches counts switch commands that succeeded; SwitchErrors those
	// that failed, with the first failures' output in Errors.
	Switches, SwitchErrors int
	// Kills counts backends killed with SIGKILL (each restarted after it).
	Kills int
	// Reloads counts `cutover reload`s that succeeded; ReloadErrors those
	// that failed.
	Reloads, ReloadErrors int
	Samples               []Sample
	// Failures holds the first failed requests.
	Failures []loadclient.Record
	// Errors holds the first failures of switch, reload or kill commands.
	Errors []string
}

// Peak returns the highest RSS and descriptor count among samples taken at
// or after from.
func (r *Result) Peak(from time.Duration) (rssKB int64, fds int) {
	for _, s := range r.Samples {
		if s.At >= from {
			rssKB = max(rssKB, s.RSSKB)
			fds = max(fds, s.FDs)
		}
	}
	return rssKB, fds
}

// Last is the last sample (zero when none).
func (r *Result) Last() Sample {
	if len(r.Samples) == 0 {
		return Sample{}
	}
	return r.Samples[len(r.Samples)-1]
}

const maxKept = 20

func (r *Result) addError(format string, args ...any) {
	if len(r.Errors) < maxKept {
		r.Errors = append(r.Errors, fmt.Sprintf(format, args...))
	}
}

// backend is one bench/backend process, restarted on the same address
// after a kill.
type backend struct {
	name, addr string
	cmd        *exec.Cmd
	done       chan struct{}
}

// run is the state of one soak.
type run struct {
	o       Options
	cfg     string
	socket  string
	proxy   string
	pools   map[string][]*backend
	serve   *exec.Cmd
	served  chan struct{}
	mu      sync.Mutex // guards res against the sampler
	res     Result
	started time.Time
}

// Run does a soak run. Every process it starts is stopped before it returns.
// The error is for a run that could not be done; failed requests are in the
// Result.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	r := &run{o: o, pools: map[string][]*backend{}}
	defer r.stopAll()
	if err := r.setUp(ctx); err != nil {
		return nil, err
	}
	return r.soak(ctx)
}

// start runs a program with its own process group (so a terminal's Ctrl-C
// reaches only the soak, which stops it) and the parent-death signal as the
// backstop if the soak is killed.
func (r *run) start(name string, args ...string) (*exec.Cmd, chan struct{}, error) {
	logFile, err := os.OpenFile(filepath.Join(r.o.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logFile.Close()
		close(done)
	}()
	return cmd, done, nil
}

// startBackend starts b and waits until it accepts connections.
func (r *run) startBackend(b *backend) error {
	cmd, done, err := r.start("backend-"+b.name, r.o.Backend, "-addr", b.addr, "-name", b.name)
	if err != nil {
		return err
	}
	b.cmd, b.done = cmd, done
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case <-done:
			b.cmd = nil
			log, _ := os.ReadFile(filepath.Join(r.o.Dir, "backend-"+b.name+".log"))
			return fmt.Errorf("backend %s on %s exited at start: %v: %s", b.name, b.addr, cmd.ProcessState, lastLine(log))
		default:
		}
		c, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("backend %s does not accept connections on %s within 5s: %w", b.name, b.addr, err)
		}
		// A child process's readiness: there is no signal to await.
		time.Sleep(10 * time.Millisecond)
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func (r *run) setUp(ctx context.Context) error {
	var err error
	if r.proxy, err = freeport.Addr(); err != nil {
		return err
	}
	for _, colour := range []string{"blue", "green"} {
		for i := 1; i <= 2; i++ {
			addr, err := freeport.Addr()
			if err != nil {
				return err
			}
			b := &backend{name: fmt.Sprintf("%s-%d", colour, i), addr: addr}
			if err := r.startBackend(b); err != nil {
				return err
			}
			r.pools[colour] = append(r.pools[colour], b)
		}
	}
	r.socket = filepath.Join(r.o.Dir, "admin.sock")
	r.cfg = filepath.Join(r.o.Dir, "cutover.yaml")
	addrs := func(colour string) string {
		var q []string
		for _, b := range r.pools[colour] {
			q = append(q, strconv.Quote(b.addr))
		}
		return strings.Join(q, ", ")
	}
	text := fmt.Sprintf(`listen:
  http: "%s"
state_dir: %s
admin: {socket: %s}
log: {access: "off"}
services:
  web:
    health: {path: /healthz, interval: 100ms, timeout: 1s, healthy: 2, unhealthy: 2}
    drain_timeout: 5s
    pools:
      blue: [%s]
      green: [%s]
    active: blue
`, r.proxy, filepath.Join(r.o.Dir, "state"), r.socket, addrs("blue"), addrs("green"))
	if err := os.WriteFile(r.cfg, []byte(text), 0o600); err != nil {
		return err
	}
	if r.serve, r.served, err = r.start("cutover", r.o.Cutover, "serve", "-c", r.cfg); err != nil {
		return err
	}
	return r.awaitAdmin(ctx)
}

// awaitAdmin waits until the admin API answers.
func (r *run) awaitAdmin(ctx context.Context) error {
	c := admin.NewUnixClient(r.socket)
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-r.served:
			return fmt.Errorf("cutover serve exited at start: %v (see %s)", r.serve.ProcessState, filepath.Join(r.o.Dir, "cutover.log"))
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Health(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("cutover serve's admin API did not answer within 20s: %w", err)
		}
		// A child process's readiness: there is no signal to await.
		time.Sleep(20 * time.Millisecond)
	}
}

// cli runs a cutover command against the soak's configuration.
func (r *run) cli(ctx context.Context, args ...string) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, r.o.Cutover, append(args, "-c", r.cfg)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("cutover %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (r *run) soak(ctx context.Context) (*Result, error) {
	o := r.o
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	type loadResult struct {
		res *loadclient.Result
		err error
	}
	loadDone := make(chan loadResult, 1)
	r.started = time.Now()
	go func() {
		res, err := loadclient.Run(loadCtx, loadclient.Options{Addr: r.proxy, Connections: o.Connections, Duration: o.Duration})
		loadDone <- loadResult{res, err}
	}()
	// The sampler stops with the soak's loop, before the load client closes
	// its connections: the last sample is of the proxy under load.
	sampleCtx, stopSampling := context.WithCancel(loadCtx)
	defer stopSampling()
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		r.sample(sampleCtx)
	}()

	live, kills := "blue", 0
	switchT := time.NewTicker(o.SwitchEvery)
	killT := time.NewTicker(o.KillEvery)
	reloadT := time.NewTicker(o.ReloadEvery)
	defer switchT.Stop()
	defer killT.Stop()
	defer reloadT.Stop()
	end := time.After(o.Duration)
	// Restarts come back to this loop, which alone touches the backends.
	restart := make(chan *backend, 4)
	var pending []*time.Timer
	defer func() {
		for _, t := range pending {
			t.Stop()
		}
	}()
	var lr loadResult
	gotLoad := false
loop:
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-end:
			break loop
		case lr = <-loadDone:
			// The load may end a moment before the timer: from here on the
			// proxy has no clients and samples would say nothing.
			gotLoad = true
			break loop
		case <-r.served:
			r.record(func(res *Result) { res.addError("cutover serve exited during the soak: %v", r.serve.ProcessState) })
			break loop
		case <-switchT.C:
			to := "green"
			if live == "green" {
				to = "blue"
			}
			err := r.cli(ctx, "deploy", to, "--timeout", "10s")
			r.record(func(res *Result) {
				if err != nil {
					res.SwitchErrors++
					res.addError("%v", err)
					return
				}
				res.Switches++
				live = to
			})
		case <-killT.C:
			// One of the live pool's two backends: its requests in flight
			// break, and the proxy must answer them from the other.
			b := r.pools[live][kills%2]
			if b.cmd == nil {
				continue // still down from the last kill
			}
			select {
			case <-b.done:
				// Nobody killed it: a failure of the soak's own, reported,
				// and the backend started again.
				state := b.cmd.ProcessState
				b.cmd = nil
				err := r.startBackend(b)
				r.record(func(res *Result) {
					res.addError("backend %s exited by itself (%v); restarted: %v", b.name, state, err)
				})
				continue
			default:
			}
			kills++
			err := b.cmd.Process.Signal(syscall.SIGKILL)
			if err == nil {
				<-b.done
				b.cmd = nil
				// Down long enough for the proxy's passive and active checks
				// to notice, as a container that crashed and restarts.
				pending = append(pending, time.AfterFunc(300*time.Millisecond, func() { restart <- b }))
			}
			r.record(func(res *Result) {
				if err != nil {
					res.addError("kill %s: %v", b.name, err)
					return
				}
				res.Kills++
			})
		case b := <-restart:
			if err := r.startBackend(b); err != nil {
				r.record(func(res *Result) { res.addError("restart %s: %v", b.name, err) })
			}
		case <-reloadT.C:
			err := r.cli(ctx, "reload")
			r.record(func(res *Result) {
				if err != nil {
					res.ReloadErrors++
					res.addError("%v", err)
					return
				}
				res.Reloads++
			})
		}
	}
	stopSampling()
	<-samplerDone
	if !gotLoad {
		lr = <-loadDone
	}
	stopLoad()
	if lr.err != nil {
		return nil, lr.err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.res
	res.Elapsed = lr.res.Elapsed
	res.Summary = lr.res.Summarize()
	for _, rec := range lr.res.Records {
		if rec.Failed() && len(res.Failures) < maxKept {
			res.Failures = append(res.Failures, rec)
		}
	}
	return &res, nil
}

// record changes the result under the lock the sampler shares.
func (r *run) record(f func(*Result)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.res)
}

// sample reads the proxy's RSS and descriptors every SampleEvery until ctx
// ends.
func (r *run) sample(ctx context.Context) {
	t := time.NewTicker(r.o.SampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s, err := readSample(r.serve.Process.Pid)
		s.At = time.Since(r.started)
		r.record(func(res *Result) {
			if err != nil {
				res.addError("sample: %v", err)
				return
			}
			res.Samples = append(res.Samples, s)
		})
	}
}

func readSample(pid int) (Sample, error) {
	var s Sample
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			s.RSSKB, err = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return s, fmt.Errorf("parse VmRSS %q: %w", v, err)
			}
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(fds)
	return s, nil
}

// stopAll ends cutover (SIGTERM, then SIGKILL after 10 s) and the backends,
// each by its PID.
func (r *run) stopAll() {
	if r.serve != nil {
		r.serve.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.served:
		case <-time.After(10 * time.Second):
			r.serve.Process.Kill()
			<-r.served
		}
	}
	for _, pool := range r.pools {
		for _, b := range pool {
			if b.cmd == nil {
				continue
			}
			select {
			case <-b.done:
			default:
				b.cmd.Process.Kill()
				<-b.done
			}
		}
	}
}
