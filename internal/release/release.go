// Package release ships a new version into the idle colour of a service
// with docker compose: bring it up as its own compose project, wait for
// Docker's and cutover's health checks, deploy it through the admin API
// (one atomic switch, drain), and stop the old colour when asked. The CLI's
// `cutover release` is a thin front for Run.
package release

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/controlplane/history"
	"github.com/cutover/cutover/internal/human"
	"github.com/cutover/cutover/internal/provider/docker"
)

// Options say what to release (the flags of `cutover release`).
type Options struct {
	Service  string   // cutover service (-s)
	Files    []string // compose files (-f); "{pool}" is replaced by the colour
	Compose  []string // compose services (--service); empty: every service of the files
	Image    string
	KeepOld  time.Duration
	Keep     bool // --keep-old not given: the old colour keeps running
	Name     string
	Pools    []string
	Timeout  time.Duration
	Command  string
	LogLines int
	// ReplacePrevious allows releasing into the idle colour while it is
	// the service's warm rollback target (its previous pool, still
	// running): the release replaces that version, so refused without it.
	ReplacePrevious bool
	// Deploy holds how the new colour takes traffic: its Canary, Step,
	// Guard, Detach and Preview are sent with the release's deploy (the
	// other fields are the release's own).
	Deploy admin.DeployRequest
}

// Release timing defaults.
const (
	// DefaultTimeout bounds the wait for the new colour to be healthy.
	DefaultTimeout = 3 * time.Minute
	// followTimeout bounds the wait for cutover's pool to list the new
	// containers once Docker says they are healthy (the provider takes
	// about a second).
	followTimeout = 20 * time.Second
	releasePoll   = 100 * time.Millisecond
	// stopWait bounds the wait for cutover serve to stop the old colour
	// after --keep-old 0.
	stopWait = 2 * time.Minute
)

// UsageError is a release refused for how it was asked (flags, the
// configuration's pools): the CLI exits 2 for it, 1 for other failures.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Run runs one release of o through api, printing each step to out.
// connect reaches the Docker Engine.
func Run(ctx context.Context, o Options, api *admin.Client, connect func(context.Context) (*docker.Engine, error), out io.Writer) error {
	r := &releaser{o: o, api: api, connect: connect, out: out, start: time.Now()}
	return r.run(ctx)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// releaser runs one release.
type releaser struct {
	o       Options
	api     *admin.Client
	connect func(context.Context) (*docker.Engine, error)
	out     io.Writer
	start   time.Time
	eng     *docker.Engine

	service, live, idle, project string
	files                        []string
	// replacing: the idle colour was the warm rollback target, and this
	// release replaces it (Options.ReplacePrevious).
	replacing bool
}

// step prints one line with the time since the release began.
func (r *releaser) step(format string, args ...any) {
	fmt.Fprintf(r.out, "[%7.2fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

func (r *releaser) run(ctx context.Context) error {
	if err := r.pick(ctx); err != nil {
		return err
	}
	compose, err := ComposeCommand(ctx, r.o.Command)
	if err != nil {
		return &UsageError{Err: err}
	}
	if r.eng, err = r.connect(ctx); err != nil {
		return &UsageError{Err: err}
	}
	defer r.eng.Close()
	if err := r.checkProject(ctx); err != nil {
		return err
	}
	services, version, err := composeServices(r.files)
	if err != nil {
		return &UsageError{Err: err}
	}
	if len(r.o.Compose) > 0 {
		for _, s := range r.o.Compose {
			if !slices.Contains(services, s) {
				return &UsageError{Err: fmt.Errorf("--service %s: the compose files (%s) have no service %q — they have: %s", s, strings.Join(r.files, ", "), s, strings.Join(services, ", "))}
			}
		}
		services = r.o.Compose
	}

	before, err := r.eng.ComposeContainers(ctx, r.project, services)
	if err != nil {
		return err
	}
	existed := map[string]bool{}
	for _, c := range before {
		existed[c.ID] = true
	}

	tmp, err := os.MkdirTemp("", "cutover-release-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	args := []string{"-p", r.project}
	for _, f := range r.files {
		args = append(args, "-f", f)
	}
	if r.o.Image != "" {
		override, err := writeImageOverride(tmp, version, services, r.o.Image)
		if err != nil {
			return err
		}
		args = append(args, "-f", override)
	}
	args = append(args, "up", "-d")
	args = append(args, r.o.Compose...)
	env := append(os.Environ(), "CUTOVER_POOL="+r.idle, "CUTOVER_PROJECT="+r.project)
	if r.o.Image != "" {
		env = append(env, "CUTOVER_APP_IMAGE="+r.o.Image)
	}
	r.step("%s %s", strings.Join(compose, " "), strings.Join(args, " "))
	if err := RunCompose(ctx, compose, args, env, r.out); err != nil {
		return r.fail(ctx, existed, services, nil, fmt.Errorf("%s up failed: %w", strings.Join(compose, " "), err))
	}

	deadline := r.start.Add(r.o.Timeout)
	fresh, err := r.waitDocker(ctx, services, deadline)
	if err != nil {
		return r.fail(ctx, existed, services, fresh, err)
	}
	if err := r.waitFollowed(ctx, fresh, deadline); err != nil {
		return r.fail(ctx, existed, services, fresh, err)
	}

	remaining := time.Until(deadline)
	if remaining < time.Second {
		remaining = time.Second
	}
	r.step("deploy %s: cutover health checks, then the switch", r.idle)
	d := r.o.Deploy
	trial := len(d.Canary) > 0 || d.Guard != nil || d.Detach || d.Preview
	var stopOld *admin.Duration
	if !r.o.Keep && !trial {
		// cutover serve stops the old colour, scheduled with the switch:
		// it happens whatever becomes of this command.
		keep := admin.Duration(r.o.KeepOld)
		stopOld = &keep
	}
	res, err := r.api.Deploy(ctx, admin.DeployRequest{Service: r.service, Pool: r.idle, Timeout: admin.Duration(remaining), Origin: admin.OriginRelease,
		Canary: d.Canary, Step: d.Step, Guard: d.Guard, Detach: d.Detach, Preview: d.Preview, StopOld: stopOld}, func(ev admin.Event) {
		r.step("  %s", ev.Message)
	})
	if err != nil {
		var ce *admin.Error
		if errors.As(err, &ce) && ce.Kind == admin.KindUnhealthy {
			return r.fail(ctx, existed, services, failingOf(fresh, ce.Failing), err)
		}
		return r.fail(ctx, existed, services, nil, err)
	}
	if res.Canary > 0 || res.Preview != "" || d.Detach {
		// The old colour is still live (a canary, a preview) or may be
		// rolled back to by a guard still watching: it keeps running.
		r.step("release done: %s; %s keeps running while it may take traffic", res.Message, r.live)
		return nil
	}
	if trial && !r.o.Keep {
		defer r.step("--keep-old applies to a plain switch: after a canary or guard, %s keeps running — stop it when you no longer need it", r.live)
	}
	r.step("release done: service %s switched from %s to %s; release start to switch: %s; %s drained from %s in %s",
		r.service, orNone(res.From), res.Pool, human.Duration(res.SwitchedAt.Sub(r.start)),
		human.Count(int(res.Drained), "request"), orNone(res.From), human.Duration(time.Duration(res.TimeToDrain)))
	for _, w := range res.Warnings {
		r.step("warning: %s", w)
	}
	return r.retireOld(ctx, res)
}

// pick finds the service, its live pool, the idle colour and its project.
func (r *releaser) pick(ctx context.Context) error {
	st, err := r.api.Status(ctx, r.o.Service)
	if err != nil {
		return err
	}
	if len(st.Services) != 1 {
		var names []string
		for _, s := range st.Services {
			names = append(names, s.Name)
		}
		return &UsageError{Err: fmt.Errorf("cutover serves %d services (%s): name the one to release with -s SERVICE", len(names), strings.Join(names, ", "))}
	}
	svc := st.Services[0]
	r.service, r.live = svc.Name, svc.Active
	if op := svc.Operation; op != nil {
		return fmt.Errorf("a %s of service %s to pool %s is in progress — wait for it to finish, then release", op.Kind, svc.Name, op.Pool)
	}
	i := slices.Index(r.o.Pools, r.live)
	if i < 0 {
		return &UsageError{Err: fmt.Errorf("service %s is served by pool %q, which is not one of the colours %s — name the colours with --pools", svc.Name, r.live, strings.Join(r.o.Pools, ","))}
	}
	r.idle = r.o.Pools[(i+1)%len(r.o.Pools)]
	var idle *admin.PoolStatus
	for j := range svc.Pools {
		if svc.Pools[j].Name == r.idle {
			idle = &svc.Pools[j]
		}
	}
	name := r.o.Name
	if name == "" {
		name = r.service
	}
	r.project = name + "-" + r.idle
	switch {
	case idle == nil:
		return &UsageError{Err: fmt.Errorf("service %s has no pool %q to release into — add it to the configuration, following the containers of the release: %s: {compose: {project: %s, service: SERVICE}, port: PORT}", r.service, r.idle, r.idle, r.project)}
	case idle.Source != admin.SourceDocker:
		return &UsageError{Err: fmt.Errorf("pool %q of service %s takes its targets from %s, not from Docker: release needs cutover to follow the colour's containers — set services.%s.pools.%s to {compose: {project: %s, service: SERVICE}, port: PORT} (or containers: [NAMES])",
			r.idle, r.service, idle.Source, r.service, r.idle, r.project)}
	}
	if svc.Previous == r.idle && len(idle.Targets) > 0 {
		if !r.o.ReplacePrevious {
			return fmt.Errorf("pool %s of service %s is its warm rollback colour (the previous pool, %s running): a release into it replaces that version, so `cutover rollback` could not return to it, and a failed release would leave no rollback at all — roll back or stop %s first, or pass --replace-previous to replace it",
				r.idle, r.service, human.Count(len(idle.Targets), "target"), r.idle)
		}
		r.replacing = true
		r.step("replacing the warm rollback colour %s (--replace-previous): until this release switches, a rollback is not possible", r.idle)
	}
	for _, f := range r.o.Files {
		r.files = append(r.files, strings.ReplaceAll(f, "{pool}", r.idle))
	}
	r.step("release of service %s: live pool %s, releasing into %s as compose project %s", r.service, r.live, r.idle, r.project)
	return nil
}

// checkProject refuses when the project holds a container of the live
// pool: bringing it up could recreate a container that serves.
func (r *releaser) checkProject(ctx context.Context) error {
	st, err := r.api.Status(ctx, r.service)
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, p := range st.Services[0].Pools {
		if p.Name == r.live {
			for _, t := range p.Targets {
				live[t.Label] = true
			}
		}
	}
	cs, err := r.eng.ComposeContainers(ctx, r.project, nil)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if live[c.Name] {
			return fmt.Errorf("compose project %s holds container %s, which serves live traffic in pool %s — refusing to touch it; give the colours distinct projects (--name) and compose files", r.project, c.Name, r.live)
		}
	}
	return nil
}

// waitDocker waits until every container of the released services runs
// and passes its Docker health check. It fails at once when one exits or
// turns unhealthy.
func (r *releaser) waitDocker(ctx context.Context, services []string, deadline time.Time) ([]docker.Container, error) {
	var last []docker.Container
	reported := ""
	for {
		cs, err := r.eng.ComposeContainers(ctx, r.project, services)
		if err != nil {
			return last, err
		}
		last = cs
		if len(cs) == 0 {
			return nil, fmt.Errorf("compose project %s has no containers for services %s after up", r.project, strings.Join(services, ", "))
		}
		var waiting, states []string
		var failing []docker.Container
		for _, c := range cs {
			states = append(states, c.Name+" "+c.Status)
			switch {
			case c.State == "exited" || c.State == "dead":
				failing = append(failing, c)
			case c.Health == docker.HealthUnhealthy:
				failing = append(failing, c)
			case !c.Running() || c.Health == docker.HealthStarting:
				waiting = append(waiting, c.Name)
			}
		}
		if line := strings.Join(states, ", "); line != reported {
			r.step("containers: %s", line)
			reported = line
		}
		if len(failing) > 0 {
			var what []string
			for _, c := range failing {
				what = append(what, c.Name+" "+c.Status)
			}
			return failing, fmt.Errorf("the new containers did not start healthy: %s", strings.Join(what, ", "))
		}
		if len(waiting) == 0 {
			r.step("Docker: every new container runs and passes its health check (%d)", len(cs))
			return cs, nil
		}
		if time.Now().After(deadline) {
			var left []docker.Container
			for _, c := range cs {
				if slices.Contains(waiting, c.Name) {
					left = append(left, c)
				}
			}
			return left, fmt.Errorf("not healthy within --timeout %s: %s", r.o.Timeout, strings.Join(waiting, ", "))
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return last, err
		}
	}
}

// waitFollowed waits until cutover's pool for the colour lists exactly
// the new containers, at their current addresses.
func (r *releaser) waitFollowed(ctx context.Context, fresh []docker.Container, deadline time.Time) error {
	want := map[string]map[string]bool{} // container name → its IPs
	for _, c := range fresh {
		ips := map[string]bool{}
		for _, ep := range c.Networks {
			if ep.IP != "" {
				ips[ep.IP] = true
			}
		}
		want[c.Name] = ips
	}
	limit := time.Now().Add(followTimeout)
	if deadline.Before(limit) {
		limit = deadline
	}
	var have []string
	for {
		st, err := r.api.Status(ctx, r.service)
		if err != nil {
			return err
		}
		have = have[:0]
		matched := 0
		for _, p := range st.Services[0].Pools {
			if p.Name != r.idle {
				continue
			}
			for _, t := range p.Targets {
				have = append(have, t.Label+"="+t.Addr)
				host, _, _ := net.SplitHostPort(t.Addr)
				if want[t.Label][host] {
					matched++
				}
			}
		}
		if matched == len(want) && len(have) == len(want) {
			sort.Strings(have)
			r.step("cutover's pool %s follows the new containers: %s", r.idle, strings.Join(have, ", "))
			return nil
		}
		if time.Now().After(limit) {
			var names []string
			for n := range want {
				names = append(names, n)
			}
			sort.Strings(names)
			return fmt.Errorf("cutover's pool %s does not follow the new containers %s (its targets: %s) — its configuration must name them: {compose: {project: %s, service: SERVICE}, port: PORT} or containers: [%s]",
				r.idle, strings.Join(names, ", "), orNone(strings.Join(have, ", ")), r.project, strings.Join(names, ", "))
		}
		if err := sleepCtx(ctx, releasePoll); err != nil {
			return err
		}
	}
}

// fail reports a failed release: the last log lines of the failing
// containers, then removes the containers the release created.
func (r *releaser) fail(ctx context.Context, existed map[string]bool, services []string, failing []docker.Container, cause error) error {
	// The caller may be gone (Ctrl-C); cleaning up must still happen.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	r.step("release failed: %v", cause)
	for _, c := range failing {
		logs, err := r.eng.LogTail(cctx, c.ID, r.o.LogLines)
		if err != nil {
			r.step("logs of %s: %v", c.Name, err)
			continue
		}
		r.step("last %d log lines of %s (%s):", r.o.LogLines, c.Name, c.Status)
		for _, l := range strings.Split(strings.TrimRight(logs, "\n"), "\n") {
			fmt.Fprintf(r.out, "    | %s\n", l)
		}
	}
	cs, err := r.eng.ComposeContainers(cctx, r.project, services)
	if err != nil {
		r.step("could not list the new containers to remove them: %v", err)
	}
	var removed []string
	for _, c := range cs {
		if existed[c.ID] {
			continue
		}
		if err := r.eng.Remove(cctx, c.ID); err != nil {
			r.step("remove %s: %v", c.Name, err)
			continue
		}
		removed = append(removed, c.Name)
	}
	r.step("removed the new containers: %s; live traffic stays on %s, untouched", orNone(strings.Join(removed, ", ")), r.live)
	if r.replacing {
		r.step("the warm rollback colour %s was replaced by this release and is gone: there is no instant rollback now", r.idle)
		return fmt.Errorf("release of service %s into %s failed, and the previous version that ran in %s (the rollback colour) was replaced and is gone: %w", r.service, r.idle, r.idle, cause)
	}
	return fmt.Errorf("release of service %s into %s failed: %w", r.service, r.idle, cause)
}

// retireOld says what becomes of the old colour: it keeps running, or
// cutover serve stops it at the time the switch scheduled (StopsAt). With
// --keep-old 0 it waits for that stop, right after the drain, and reports
// it; with a longer time it returns at once.
func (r *releaser) retireOld(ctx context.Context, res *admin.DeployResult) error {
	old := res.From
	switch {
	case old == "":
		return nil
	case r.o.Keep:
		r.step("%s keeps running for an instant `cutover rollback`; stop it when you no longer need it (or pass --keep-old)", old)
		return nil
	case res.StopsAt == nil:
		r.step("%s keeps running: cutover did not schedule its stop", old)
		return nil
	case r.o.KeepOld > 0:
		r.step("cutover serve stops %s at %s (in %s) unless it is live again by then: `cutover rollback` until then is instant; `cutover status` shows the time",
			old, res.StopsAt.Local().Format("15:04:05"), human.Duration(time.Until(*res.StopsAt).Round(time.Second)))
		return nil
	}
	r.step("cutover serve stops %s now", old)
	return r.awaitStop(ctx, old, *res.StopsAt)
}

// awaitStop waits until cutover serve has carried out the scheduled stop
// of pool and reports its outcome from the history.
func (r *releaser) awaitStop(ctx context.Context, pool string, at time.Time) error {
	limit := time.Now().Add(stopWait)
	for {
		st, err := r.api.Status(ctx, r.service)
		if err != nil {
			return err
		}
		svc := st.Services[0]
		pending := svc.Operation != nil && svc.Operation.Kind == admin.OpStop && svc.Operation.Pool == pool
		for _, p := range svc.Pools {
			if p.Name == pool && p.StopsAt != nil {
				pending = true
			}
		}
		if !pending {
			break
		}
		if time.Now().After(limit) {
			return fmt.Errorf("the release is done, but cutover serve has not stopped the old colour %s within %s — look at cutover status and cutover history", pool, stopWait)
		}
		if err := sleepCtx(ctx, releasePoll); err != nil {
			r.step("interrupted: cutover serve stops %s all the same", pool)
			return nil
		}
	}
	h, err := r.api.History(ctx, r.service)
	if err != nil {
		return err
	}
	for _, e := range h.Entries {
		if e.Kind != history.KindStop || e.From != pool || e.Started.Before(at.Add(-time.Second)) {
			continue
		}
		if e.Result != history.ResultSucceeded {
			return fmt.Errorf("the release is done, but %s", e.Reason)
		}
		r.step("%s", e.Reason)
		return nil
	}
	r.step("%s is live again (or being deployed): not stopped", pool)
	return nil
}

// failingOf maps the targets cutover found unhealthy to their containers.
func failingOf(fresh []docker.Container, failing []admin.TargetProgress) []docker.Container {
	var out []docker.Container
	for _, c := range fresh {
		for _, f := range failing {
			if f.Label == c.Name || f.Addr == c.Name {
				out = append(out, c)
				break
			}
		}
	}
	if len(out) == 0 {
		return fresh
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ComposeCommand finds the compose tool: the override, else the Compose
// plugin (docker compose) when it answers, else docker-compose on PATH.
func ComposeCommand(ctx context.Context, override string) ([]string, error) {
	if override != "" {
		return strings.Fields(override), nil
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err := exec.CommandContext(cctx, "docker", "compose", "version").Run()
	cancel()
	if err == nil {
		return []string{"docker", "compose"}, nil
	}
	// docker-compose v1 is a Python program that takes a while to start:
	// finding it is enough.
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}, nil
	}
	return nil, errors.New("neither `docker compose` nor `docker-compose` works here — install the Compose plugin or docker-compose, or name the command with --compose")
}

// RunCompose runs compose, copying its output indented. When it fails the
// error carries the last lines compose wrote to stderr (e.g. that the
// image cannot be pulled), not only its exit status.
func RunCompose(ctx context.Context, compose, args, env []string, out io.Writer) error {
	cmd := exec.CommandContext(ctx, compose[0], append(compose[1:], args...)...)
	cmd.Env = env
	w := &prefixWriter{w: out, prefix: "    | "}
	tail := &tailWriter{}
	cmd.Stdout, cmd.Stderr = w, io.MultiWriter(w, tail)
	err := cmd.Run()
	w.Flush()
	if err != nil {
		if why := tail.lines(stderrLines); why != "" {
			return fmt.Errorf("%s (%w)", why, err)
		}
	}
	return err
}

// stderrLines is how many of compose's last stderr lines a failure shows.
const stderrLines = 4

// tailWriter keeps the end of what is written to it (at most tailBytes).
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

const tailBytes = 8 << 10

func (t *tailWriter) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > tailBytes {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailBytes:]...)
	}
	return len(b), nil
}

// lines returns the last n non-empty lines, joined by "; ".
func (t *tailWriter) lines(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, l := range strings.FieldsFunc(string(t.buf), func(r rune) bool { return r == '\n' || r == '\r' }) {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "; ")
}

// prefixWriter indents each line written to it.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexAny(p.buf, "\r\n")
		if i < 0 {
			break
		}
		if line := bytes.TrimSpace(p.buf[:i]); len(line) > 0 {
			fmt.Fprintf(p.w, "%s%s\n", p.prefix, line)
		}
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

func (p *prefixWriter) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if line := bytes.TrimSpace(p.buf); len(line) > 0 {
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, line)
	}
	p.buf = nil
}

// composeServices reads the service names (sorted) and the version key of
// compose files; later files add services.
func composeServices(files []string) ([]string, string, error) {
	set := map[string]bool{}
	version := ""
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, "", fmt.Errorf("compose file: %w", err)
		}
		var doc struct {
			Version  string               `yaml:"version"`
			Services map[string]yaml.Node `yaml:"services"`
		}
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, "", fmt.Errorf("compose file %s is not valid YAML: %w", f, err)
		}
		if version == "" {
			version = doc.Version
		}
		for s := range doc.Services {
			set[s] = true
		}
	}
	if len(set) == 0 {
		return nil, "", fmt.Errorf("the compose files %s define no services", strings.Join(files, ", "))
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out, version, nil
}

// writeImageOverride writes a compose file that sets the image of each
// service, with the same version key as the app's files (docker-compose v1
// wants them to agree).
func writeImageOverride(dir, version string, services []string, image string) (string, error) {
	type svc struct {
		Image string `yaml:"image"`
	}
	doc := struct {
		Version  string         `yaml:"version,omitempty"`
		Services map[string]svc `yaml:"services"`
	}{Version: version, Services: map[string]svc{}}
	for _, s := range services {
		doc.Services[s] = svc{Image: image}
	}
	data, err := yaml.Marshal(doc)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "cutover-image.yaml")
	return path, os.WriteFile(path, data, 0o600)
}
