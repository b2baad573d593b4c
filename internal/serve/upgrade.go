package serve

// Upgrading cutover in place, as nginx does on SIGUSR2: the running process
// (the parent) starts a new one (the child) and hands it every listening
// socket by inheritance, so no connection is ever refused.
//
// The hand-over, over two pipes (status: child → parent, control: parent →
// child):
//
//  1. The parent closes its gate: deploys, rollbacks and reloads are
//     refused from now on, so the state cannot change under the child.
//  2. It starts the child with the listeners as extra files, described in
//     $CUTOVER_UPGRADE (upgradeEnv). The child's stderr is a pipe the
//     parent copies to its own and keeps the end of, for the error message.
//  3. The child reads the configuration and the state, builds everything
//     on the inherited sockets (or binds addresses the configuration added),
//     starts its health checks and waits until each service's active pool
//     is the parent's and has passed a probe. It writes "ready".
//  4. The parent holds accept on its admin listeners (the sockets stay
//     open: connections queue for the child), releases the state lease
//     and writes "go".
//  5. The child takes the lease, starts accepting on every listener and
//     writes "serving"; it then points its stderr at the parent's own
//     (so its logs survive the parent) and tells systemd it is the main
//     process.
//  6. The parent stops accepting (its copies of the sockets close; the
//     child's stay), drains (Server.Drain) and exits.
//
// Any failure before "serving" (the child exits, is not ready within the
// timeout, or says something else) kills the child; the parent takes the
// lease back if it had let it go, resumes its admin listeners, opens the
// gate and keeps serving, and the error carries the child's output. If the
// parent dies during the hand-over, the child sees its control pipe end,
// and takes over once ready: the lease is free, the sockets are its own.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/controlplane/state/etcdstore"
	"github.com/cutover/cutover/internal/dataplane/listen"
)

// UpgradeEnv is the environment variable that tells a cutover serve it is
// the new process of an upgrade, and describes what it inherits.
const UpgradeEnv = "CUTOVER_UPGRADE"

// DefaultUpgradeTimeout bounds how long the new process may take to be
// ready when the request gives no timeout.
const DefaultUpgradeTimeout = 30 * time.Second

// drainIdleGrace is how long the old process keeps an idle keep-alive
// connection open after the hand-over, for a busy client's next request
// (answered with Connection: close) rather than racing it with a close.
const drainIdleGrace = time.Second

// Hand-over messages on the pipes, one per line.
const (
	msgReady   = "ready"
	msgGo      = "go"
	msgServing = "serving"
)

// upgradeEnv is the JSON in $CUTOVER_UPGRADE.
type upgradeEnv struct {
	Version   int                  `json:"version"`
	ParentPID int                  `json:"parent_pid"`
	StatusFD  int                  `json:"status_fd"`
	ControlFD int                  `json:"control_fd"`
	StderrFD  int                  `json:"stderr_fd"`
	Listeners []listen.InheritedFD `json:"listeners"`
	// Active is each service's active pool in the parent.
	Active map[string]string `json:"active"`
	// Timeout is the parent's: the child gives up waiting for its pools
	// after it (the parent has killed it by then, unless it died).
	Timeout string `json:"timeout"`
}

const upgradeEnvVersion = 1

// stderrTail is how much of the child's output a failed upgrade reports.
const stderrTail = 16 << 10

func busy(msg string) error { return &admin.Error{Kind: admin.KindBusy, Message: msg} }

func refused(msg string) error {
	return &admin.Error{Kind: admin.KindRefused, Message: msg}
}

// gate is Options.Gate of the admin API: state-changing requests share it,
// an upgrade takes it alone.
func (in *Instance) enterGate() (func(), error) {
	if !in.gate.TryRLock() {
		return nil, busy("cutover is upgrading itself: deploys, rollbacks and reloads are refused until the new process serves — retry in a few seconds (the new process answers on the same socket)")
	}
	return in.gate.RUnlock, nil
}

// Upgrade starts the new binary and hands it the listeners (see the top of
// this file). On success this process has stopped accepting and Run drains
// and exits; on failure nothing changed. A caller that goes away does not
// stop an upgrade under way (ctx is unused, as for deploys).
func (in *Instance) Upgrade(_ context.Context, req admin.UpgradeRequest) (*admin.UpgradeResponse, error) {
	if in.o.Config != nil || in.o.ConfigPath == "" {
		return nil, refused("this cutover runs a built-in configuration and cannot upgrade itself; start it with `cutover serve -c FILE`")
	}
	timeout := DefaultUpgradeTimeout
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil || d <= 0 {
			return nil, &admin.Error{Kind: admin.KindInvalid, Message: fmt.Sprintf("upgrade timeout %q: write a positive duration such as 30s", req.Timeout)}
		}
		timeout = d
	}
	binary, err := upgradeBinary(req)
	if err != nil {
		return nil, err
	}
	if !in.upgradeMu.TryLock() {
		return nil, busy("an upgrade of this cutover is already running; wait for it to finish")
	}
	defer in.upgradeMu.Unlock()
	if pid := in.handedTo.Load(); pid != 0 {
		return nil, refused(fmt.Sprintf("this cutover (pid %d) has already handed over to pid %d and is draining", os.Getpid(), pid))
	}
	if !in.gate.TryLock() {
		return nil, busy("a deploy, rollback or reload is running; retry the upgrade when it has finished")
	}
	res, err := in.handOver(binary, timeout)
	if err != nil {
		in.gate.Unlock()
		in.log.Error("upgrade failed; this process keeps serving", "binary", binary, "err", err)
		return nil, err
	}
	in.handedTo.Store(int64(res.NewPID))
	in.log.Info("upgrade: the new process serves; draining this one",
		"new_pid", res.NewPID, "binary", binary, "ready_ms", res.ReadyMS, "switch_ms", res.SwitchMS, "drain", res.Drain)
	select {
	case in.upgraded <- struct{}{}:
	default:
	}
	return res, nil
}

// upgradeBinary is the executable to start: the one named, the running
// executable's path as it is on disk now (a package upgrade replaced it),
// or for a restart exactly the running executable (/proc/self/exe still
// reaches it when the path was replaced).
func upgradeBinary(req admin.UpgradeRequest) (string, error) {
	binary := req.Binary
	switch {
	case req.SameBinary && binary != "":
		return "", &admin.Error{Kind: admin.KindInvalid, Message: "a restart starts the running binary; give a binary only to an upgrade"}
	case req.SameBinary:
		binary = "/proc/self/exe"
	case binary == "":
		exe, err := os.Executable()
		if err != nil {
			return "", refused(fmt.Sprintf("cannot find the running executable (%v); pass --binary PATH", err))
		}
		binary = exe
	}
	fi, err := os.Stat(binary)
	if err != nil {
		return "", &admin.Error{Kind: admin.KindInvalid, Message: fmt.Sprintf("new binary %s: %v — pass --binary with the path of the cutover to start", binary, err)}
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return "", &admin.Error{Kind: admin.KindInvalid, Message: fmt.Sprintf("new binary %s is not an executable file (mode %s)", binary, fi.Mode())}
	}
	return binary, nil
}

func (in *Instance) handOver(binary string, timeout time.Duration) (*admin.UpgradeResponse, error) {
	start := time.Now()
	handed := in.lis.Handed()
	unixLn, tcpLn := in.adm.Listeners()
	if unixLn != nil {
		handed = append(handed, listen.Handed{Name: listen.NameAdmin, Addr: in.cfg.Admin.Socket, Listener: unixLn})
	}
	if tcpLn != nil {
		handed = append(handed, listen.Handed{Name: listen.NameAdminTCP, Addr: in.cfg.Admin.TCP, Listener: tcpLn})
	}
	if in.metSrv != nil {
		handed = append(handed, listen.Handed{Name: listen.NameMetrics, Addr: in.cfg.Metrics.Listen, Listener: in.metSrv.Listener()})
	}

	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	defer statusR.Close()
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		statusW.Close()
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	defer ctlW.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		statusW.Close()
		ctlR.Close()
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	extra := []*os.File{statusW, ctlR, fileOr(in.o.Stderr, os.Stderr)}
	files, desc, err := listen.Files(handed, len(extra))
	if err != nil {
		statusW.Close()
		ctlR.Close()
		errR.Close()
		errW.Close()
		return nil, err
	}
	env := upgradeEnv{
		Version: upgradeEnvVersion, ParentPID: os.Getpid(),
		StatusFD: 3, ControlFD: 4, StderrFD: 5, Listeners: desc,
		Active: in.activePools(), Timeout: timeout.String(),
	}
	envJSON, _ := json.Marshal(env)
	cmd := exec.Command(binary, "serve", "-c", in.o.ConfigPath)
	cmd.Env = append(withoutVar(os.Environ(), UpgradeEnv), UpgradeEnv+"="+string(envJSON))
	cmd.Stdout = fileOr(in.o.Stdout, os.Stdout)
	cmd.Stderr = errW
	cmd.ExtraFiles = append(extra, files...)
	err = cmd.Start()
	// The child has its copies now (or none): close ours of its ends.
	statusW.Close()
	ctlR.Close()
	errW.Close()
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		errR.Close()
		return nil, refused(fmt.Sprintf("upgrade refused, this process keeps serving: cannot start %s: %v", binary, err))
	}
	childPID := cmd.Process.Pid
	out := &tailBuffer{max: stderrTail}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		defer errR.Close()
		io.Copy(io.MultiWriter(writerOr(in.o.Stderr), out), errR)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	lines := make(chan string, 4)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(statusR)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	leaseGone := false
	fail := func(why string) error {
		cmd.Process.Kill()
		<-exited
		if in.store != nil {
			// The new process may have registered the instance in etcd
			// over this one: this one is the instance again.
			in.store.Claim()
		}
		if leaseGone {
			// The child is dead, so its lease is free: take it back.
			l, err := acquireLease(in.cfg.StateDir, 5*time.Second)
			if err != nil {
				in.log.Error("upgrade: could not take the state lease back; state changes stay refused", "err", err)
			} else {
				in.lease = l
			}
			in.adm.Resume()
		}
		select {
		case <-copied:
		case <-time.After(time.Second):
		}
		msg := fmt.Sprintf("upgrade to %s refused, this process (pid %d) keeps serving: the new process (pid %d) %s", binary, os.Getpid(), childPID, why)
		if o := strings.TrimSpace(out.String()); o != "" {
			msg += "\nits output:\n" + o
		}
		return refused(msg)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	await := func(want string) error {
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					lines = nil // its end closed: wait for the exit or the timeout
					continue
				}
				if l != want && !strings.HasPrefix(l, want+" ") {
					return fail(fmt.Sprintf("said %q where %q was expected", l, want))
				}
				return nil
			case err := <-exited:
				exited <- err
				return fail(fmt.Sprintf("exited before it said %q (%s)", want, exitText(err)))
			case <-timer.C:
				return fail(fmt.Sprintf("was not %s within --timeout %s", want, timeout))
			}
		}
	}
	if err := await(msgReady); err != nil {
		return nil, err
	}
	ready := time.Now()
	// From here until "serving" the admin API is served by neither process
	// (connections wait in the socket's queue), and the state by neither.
	in.adm.Pause()
	in.lease.release()
	in.lease = nil
	leaseGone = true
	if _, err := io.WriteString(ctlW, msgGo+"\n"); err != nil {
		return nil, fail(fmt.Sprintf("could not be told to go on: %v", err))
	}
	// Taking the lease and starting to accept takes milliseconds; a
	// child that got ready at the end of the timeout still gets a moment.
	if !timer.Stop() {
		select {
		case <-timer.C:
		default:
		}
	}
	timer.Reset(max(timeout-time.Since(start), 10*time.Second))
	if err := await(msgServing); err != nil {
		return nil, err
	}
	switched := time.Now()
	in.adm.KeepSocketFile(true)
	return &admin.UpgradeResponse{
		OldPID: os.Getpid(), NewPID: childPID, Binary: binary,
		ReadyMS:  float64(ready.Sub(start).Microseconds()) / 1000,
		SwitchMS: float64(switched.Sub(ready).Microseconds()) / 1000,
		Drain:    in.drainTimeout().String(),
	}, nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// activePools is each service's active pool now.
func (in *Instance) activePools() map[string]string {
	out := map[string]string{}
	list, _ := in.mgr.Status("")
	for _, s := range list {
		out[s.Name] = s.Active
	}
	return out
}

// drainTimeout is how long the old process of an upgrade lets requests and
// WebSockets run: the longest drain_timeout of the services.
func (in *Instance) drainTimeout() time.Duration {
	d := time.Duration(0)
	for _, s := range in.mgr.Config().Services {
		d = max(d, s.DrainTimeout)
	}
	if d == 0 {
		d = in.cfg.Timeouts.Shutdown
	}
	return d
}

// drainAfterUpgrade ends this process after a hand-over: its listeners
// close (the new process has its own copies), idle connections close after
// drainIdleGrace, requests finish, WebSockets and event streams run until
// the end of the drain, where they are told goodbye (a close frame, the end
// of the stream) and reconnect to the new process.
func (in *Instance) drainAfterUpgrade() error {
	d := in.drainTimeout()
	ctx, cancel := context.WithTimeout(context.Background(), max(d, time.Millisecond))
	defer cancel()
	deadline, _ := ctx.Deadline()
	stopGoodbyes := in.mgr.SayGoodbye(deadline)
	err := in.lis.Drain(ctx, drainIdleGrace)
	stopGoodbyes()
	if err != nil {
		in.log.Warn("drain after the upgrade ended with connections still open", "err", err)
	}
	// The upgrade's own answer may still be on its way to the CLI.
	actx, acancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer acancel()
	in.adm.Shutdown(actx)
	in.closeAll()
	if os.Getpid() == 1 {
		return in.keepAsInit()
	}
	in.log.Info("stopped after handing over", "new_pid", in.handedTo.Load())
	return nil
}

// withoutVar drops name from an environment list.
func withoutVar(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func fileOr(w io.Writer, def *os.File) *os.File {
	if f, ok := w.(*os.File); ok {
		return f
	}
	return def
}

func writerOr(w io.Writer) io.Writer {
	if w == nil {
		return os.Stderr
	}
	return w
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// child is this process's side of a hand-over, when it was started by an
// upgrade.
type child struct {
	env        upgradeEnv
	status     *os.File
	control    *os.File
	stderr     *os.File
	listeners  *listen.Inherited
	goOn       chan struct{} // closed on "go"
	sigpipe    chan os.Signal
	stderrOnce sync.Once
	orphaned   chan struct{} // closed when the parent's end of control closed
}

// childFromEnv reads $CUTOVER_UPGRADE; nil when this is a plain start.
func childFromEnv() (*child, error) {
	v, ok := os.LookupEnv(UpgradeEnv)
	if !ok || v == "" {
		return nil, nil
	}
	os.Unsetenv(UpgradeEnv)
	var env upgradeEnv
	if err := json.Unmarshal([]byte(v), &env); err != nil {
		return nil, fmt.Errorf("$%s: %w (it is set by `cutover upgrade`; unset it to start normally)", UpgradeEnv, err)
	}
	if env.Version != upgradeEnvVersion {
		return nil, fmt.Errorf("$%s has hand-over version %d; this cutover speaks version %d — upgrade in two steps through a release that speaks both", UpgradeEnv, env.Version, upgradeEnvVersion)
	}
	c := &child{
		env:      env,
		status:   os.NewFile(uintptr(env.StatusFD), "upgrade-status"),
		control:  os.NewFile(uintptr(env.ControlFD), "upgrade-control"),
		stderr:   os.NewFile(uintptr(env.StderrFD), "parent-stderr"),
		goOn:     make(chan struct{}),
		orphaned: make(chan struct{}),
	}
	for _, fd := range []int{env.StatusFD, env.ControlFD, env.StderrFD} {
		syscall.CloseOnExec(fd)
	}
	var err error
	if c.listeners, err = listen.NewInherited(env.Listeners); err != nil {
		return nil, err
	}
	// Until serving moves stderr off the pipe to the parent, a parent that
	// dies leaves it broken: a write would raise SIGPIPE, which kills a Go
	// program writing to fd 2 unless the signal is being notified.
	c.sigpipe = make(chan os.Signal, 1)
	signal.Notify(c.sigpipe, syscall.SIGPIPE)
	go func() {
		sc := bufio.NewScanner(c.control)
		for sc.Scan() {
			if sc.Text() == msgGo {
				close(c.goOn)
				break
			}
		}
		// Keep reading: the end of the pipe tells the parent is gone.
		for sc.Scan() {
		}
		c.moveStderr()
		close(c.orphaned)
	}()
	return c, nil
}

// takeOver waits until the instance can serve like the parent, says so,
// and waits for the parent to let go, then takes the state lease. The
// caller starts serving and then calls serving.
func (c *child) takeOver(in *Instance) error {
	timeout, err := time.ParseDuration(c.env.Timeout)
	if err != nil || timeout <= 0 {
		timeout = DefaultUpgradeTimeout
	}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ready, err := c.ready(in)
		if err != nil {
			return err
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			select {
			case <-c.orphaned:
				// Nobody else serves: do what a plain start would.
				in.log.Warn("upgrade: the old process is gone and the active pools have not passed a health check yet; serving anyway")
			default:
				return fmt.Errorf("the active pools did not pass a health check within %s", timeout)
			}
			break
		}
		<-tick.C
	}
	if in.store != nil {
		// Registered before the old process can leave, so the other
		// instances (status, the readiness gate of their deploys) see
		// this instance all along; a store that does not answer does
		// not hold the upgrade up longer than an instance lease.
		select {
		case <-in.store.Registered():
		case <-time.After(min(time.Until(deadline), etcdstore.DefaultInstanceTTL)):
			in.log.Warn("upgrade: not registered in the etcd store yet; taking over anyway (it registers once etcd answers)", "store", in.store.Where())
		}
	}
	if _, err := io.WriteString(c.status, fmt.Sprintf("%s %d\n", msgReady, os.Getpid())); err != nil {
		select {
		case <-c.orphaned:
		default:
			return fmt.Errorf("telling the old process it is ready: %w", err)
		}
	}
	select {
	case <-c.goOn:
	case <-c.orphaned:
		in.log.Warn("upgrade: the old process went away during the hand-over; taking over", "old_pid", c.env.ParentPID)
	}
	if in.cfg.StateDir != "" {
		if in.lease, err = acquireLease(in.cfg.StateDir, timeout); errors.Is(err, errLeaseUnwritable) {
			in.log.Warn("serving without the state lease", "err", err)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// ready reports whether every service the parent serves has the same
// active pool here, with at least one target that passed a probe and
// every target probed once.
func (c *child) ready(in *Instance) (bool, error) {
	list, err := in.mgr.Status("")
	if err != nil {
		return false, err
	}
	for _, s := range list {
		want, ok := c.env.Active[s.Name]
		if !ok {
			continue // a service the new configuration adds
		}
		if s.Active != want {
			return false, fmt.Errorf("service %q: this process would serve pool %q, the running one serves %q — its state_dir or configuration differs", s.Name, s.Active, want)
		}
		for _, p := range s.Pools {
			if p.Name != s.Active {
				continue
			}
			passed := false
			for _, t := range p.Targets {
				if t.LastProbe == nil {
					return false, nil
				}
				if t.State == "up" && t.ConsecutivePasses > 0 {
					passed = true
				}
			}
			if !passed {
				return false, nil
			}
		}
	}
	return true, nil
}

// moveStderr points fd 2 at the parent's own stderr, off the pipe the
// parent reads (once; later calls do nothing).
func (c *child) moveStderr() error {
	var err error
	c.stderrOnce.Do(func() {
		err = syscall.Dup3(int(c.stderr.Fd()), 2, 0)
		c.stderr.Close()
		signal.Stop(c.sigpipe)
	})
	return err
}

// serving tells the parent this process accepts now, moves its stderr to
// the parent's (the pipe ends with the parent), and tells systemd.
func (c *child) serving(in *Instance) {
	if _, err := io.WriteString(c.status, msgServing+"\n"); err != nil {
		in.log.Warn("upgrade: could not tell the old process this one serves", "err", err)
	}
	c.status.Close()
	if err := c.moveStderr(); err != nil {
		in.log.Warn("upgrade: diagnostics stay on the hand-over pipe", "err", err)
	}
	in.adm.KeepSocketFile(false)
	if err := sdNotify(os.LookupEnv, mainPIDLines()...); err != nil {
		in.log.Warn("upgrade: telling systemd the new main pid failed", "err", err)
	}
}
