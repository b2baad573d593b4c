package cli

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

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/human"
	"github.com/cutover/cutover/internal/provider/docker"
)

// releaseOptions are the flags of `cutover release`.
type releaseOptions struct {
	service  string   // cutover service (-s)
	files    []string // compose files (-f); "{pool}" is replaced by the colour
	compose  []string // compose services (--service); empty: every service of the files
	image    string
	keepOld  time.Duration
	keep     bool // --keep-old not given: the old colour keeps running
	name     string
	pools    []string
	timeout  time.Duration
	command  string
	logLines int
}

// Release timing defaults.
const (
	defaultReleaseTimeout = 3 * time.Minute
	// followTimeout bounds the wait for cutover's pool to list the new
	// containers once Docker says they are healthy (the provider takes
	// about a second).
	followTimeout = 20 * time.Second
	releasePoll   = 100 * time.Millisecond
)

func newReleaseCmd(s Streams) *cobra.Command {
	var (
		at adminTarget
		o  = releaseOptions{pools: []string{"blue", "green"}, timeout: defaultReleaseTimeout, logLines: 20}
	)
	cmd := &cobra.Command{
		Use:   "release -f COMPOSE_FILE [-s SERVICE] [--service NAME]... [--image IMAGE] [--keep-old 10m]",
		Short: "Ship a new version: start the idle colour with docker compose, health-gate it, switch, drain",
		Long: `release does the seed's four manual steps in one command:

  1. picks the idle colour: of --pools (blue,green), the one the service is not served by;
  2. brings it up as its own compose project NAME-COLOUR (NAME: --name, default the service),
     docker compose -p NAME-COLOUR -f FILE... up -d, with --image as every released service's
     image (a generated override file; CUTOVER_APP_IMAGE and CUTOVER_POOL are also set for the files);
  3. waits until every new container passes its Docker HEALTHCHECK (if the image has one) and
     cutover's pool for the colour lists exactly the new containers;
  4. deploys that pool: cutover's health checks, one atomic switch, drain of the old colour;
  5. keeps the old colour running for an instant 'cutover rollback' until --keep-old has passed,
     then stops its containers (--keep-old 0: right after the drain; not given: keep running).

The colour's pool must follow Docker containers in cutover's configuration, e.g.
  green: {compose: {project: web-green, service: web}, port: 8000}
or, with a compose file per colour as in the seed (-f compose-{pool}.yaml),
  green: {containers: [my-green-server-1, my-green-server-2], port: 8000}

On failure (compose error, a container exits or turns unhealthy, cutover's checks fail) it prints
the last log lines of the failing containers, removes the containers it created, exits 1, and
live traffic is untouched.`,
		Example: "  cutover release -s web -f compose.yaml --service web --image app:v2 --keep-old 10m\n" +
			"  cutover release --socket state/admin.sock -f compose-{pool}.yaml --image cutover/demo-app:v3",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.keep = !cmd.Flags().Changed("keep-old")
			if len(o.files) == 0 {
				return &exitError{code: 2, err: errors.New("release needs the compose file of the app: -f compose.yaml (repeatable; {pool} in a path is replaced by the colour)")}
			}
			if len(o.pools) < 2 {
				return &exitError{code: 2, err: fmt.Errorf("--pools names %s; give at least two, e.g. --pools blue,green", human.Count(len(o.pools), "colour"))}
			}
			c, err := at.client()
			if err != nil {
				return err
			}
			defer c.Close()
			r := &releaser{o: o, at: at, api: c, out: s.Out, start: time.Now()}
			return r.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.service, "cutover-service", "s", "", "cutover service to release (may be omitted when there is one)")
	f.StringArrayVarP(&o.files, "file", "f", nil, "compose file (repeatable; {pool} is replaced by the colour)")
	f.StringArrayVar(&o.compose, "service", nil, "compose service to release (repeatable; default: every service of the files)")
	f.StringVar(&o.image, "image", "", "image for the released services (default: as the compose files say)")
	f.DurationVar(&o.keepOld, "keep-old", 0, "stop the old colour this long after the switch (0: after the drain; not given: keep it running)")
	f.StringVar(&o.name, "name", "", "compose project name prefix: the project is NAME-COLOUR (default: the service name)")
	f.StringSliceVar(&o.pools, "pools", o.pools, "the colours to alternate between")
	f.DurationVar(&o.timeout, "timeout", o.timeout, "how long the new colour may take to become healthy")
	f.StringVar(&o.command, "compose", "", `compose command (default: "docker compose" if it works, else "docker-compose")`)
	at.register(cmd)
	return cmd
}

// releaser runs one release.
type releaser struct {
	o     releaseOptions
	at    adminTarget
	api   *admin.Client
	out   io.Writer
	start time.Time
	eng   *docker.Engine

	service, live, idle, project string
	files                        []string
}

// step prints one line with the time since the release began.
func (r *releaser) step(format string, args ...any) {
	fmt.Fprintf(r.out, "[%7.2fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

func (r *releaser) run(ctx context.Context) error {
	if err := r.pick(ctx); err != nil {
		return err
	}
	compose, err := composeCommand(ctx, r.o.command)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if r.eng, err = connectDocker(ctx, r.at); err != nil {
		return &exitError{code: 2, err: err}
	}
	defer r.eng.Close()
	if err := r.checkProject(ctx); err != nil {
		return err
	}
	services, version, err := composeServices(r.files)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if len(r.o.compose) > 0 {
		for _, s := range r.o.compose {
			if !slices.Contains(services, s) {
				return &exitError{code: 2, err: fmt.Errorf("--service %s: the compose files (%s) have no service %q — they have: %s", s, strings.Join(r.files, ", "), s, strings.Join(services, ", "))}
			}
		}
		services = r.o.compose
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
	if r.o.image != "" {
		override, err := writeImageOverride(tmp, version, services, r.o.image)
		if err != nil {
			return err
		}
		args = append(args, "-f", override)
	}
	args = append(args, "up", "-d")
	args = append(args, r.o.compose...)
	env := append(os.Environ(), "CUTOVER_POOL="+r.idle, "CUTOVER_PROJECT="+r.project)
	if r.o.image != "" {
		env = append(env, "CUTOVER_APP_IMAGE="+r.o.image)
	}
	r.step("%s %s", strings.Join(compose, " "), strings.Join(args, " "))
	if err := runCompose(ctx, compose, args, env, r.out); err != nil {
		return r.fail(ctx, existed, services, nil, fmt.Errorf("%s up failed: %w", strings.Join(compose, " "), err))
	}

	deadline := r.start.Add(r.o.timeout)
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
	res, err := r.api.Deploy(ctx, admin.DeployRequest{Service: r.service, Pool: r.idle, Timeout: admin.Duration(remaining), Origin: admin.OriginRelease}, func(ev admin.Event) {
		r.step("  %s", ev.Message)
	})
	if err != nil {
		var ce *admin.Error
		if errors.As(err, &ce) && ce.Kind == admin.KindUnhealthy {
			return r.fail(ctx, existed, services, failingOf(fresh, ce.Failing), err)
		}
		return r.fail(ctx, existed, services, nil, err)
	}
	r.step("release done: service %s switched from %s to %s; release start to switch: %s; %s drained from %s in %s",
		r.service, orNone(res.From), res.Pool, human.Duration(res.SwitchedAt.Sub(r.start)),
		human.Count(int(res.Drained), "request"), orNone(res.From), human.Duration(time.Duration(res.TimeToDrain)))
	for _, w := range res.Warnings {
		r.step("warning: %s", w)
	}
	return r.retireOld(ctx, res.From)
}

// pick finds the service, its live pool, the idle colour and its project.
func (r *releaser) pick(ctx context.Context) error {
	st, err := r.api.Status(ctx, r.o.service)
	if err != nil {
		return apiError(err)
	}
	if len(st.Services) != 1 {
		var names []string
		for _, s := range st.Services {
			names = append(names, s.Name)
		}
		return &exitError{code: 2, err: fmt.Errorf("cutover serves %d services (%s): name the one to release with -s SERVICE", len(names), strings.Join(names, ", "))}
	}
	svc := st.Services[0]
	r.service, r.live = svc.Name, svc.Active
	if op := svc.Operation; op != nil {
		return &exitError{code: 1, err: fmt.Errorf("a %s of service %s to pool %s is in progress — wait for it to finish, then release", op.Kind, svc.Name, op.Pool)}
	}
	i := slices.Index(r.o.pools, r.live)
	if i < 0 {
		return &exitError{code: 2, err: fmt.Errorf("service %s is served by pool %q, which is not one of the colours %s — name the colours with --pools", svc.Name, r.live, strings.Join(r.o.pools, ","))}
	}
	r.idle = r.o.pools[(i+1)%len(r.o.pools)]
	var idle *admin.PoolStatus
	for j := range svc.Pools {
		if svc.Pools[j].Name == r.idle {
			idle = &svc.Pools[j]
		}
	}
	name := r.o.name
	if name == "" {
		name = r.service
	}
	r.project = name + "-" + r.idle
	switch {
	case idle == nil:
		return &exitError{code: 2, err: fmt.Errorf("service %s has no pool %q to release into — add it to the configuration, following the containers of the release: %s: {compose: {project: %s, service: SERVICE}, port: PORT}", r.service, r.idle, r.idle, r.project)}
	case idle.Source != admin.SourceDocker:
		return &exitError{code: 2, err: fmt.Errorf("pool %q of service %s takes its targets from %s, not from Docker: release needs cutover to follow the colour's containers — set services.%s.pools.%s to {compose: {project: %s, service: SERVICE}, port: PORT} (or containers: [NAMES])",
			r.idle, r.service, idle.Source, r.service, r.idle, r.project)}
	}
	for _, f := range r.o.files {
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
		return apiError(err)
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
			return &exitError{code: 1, err: fmt.Errorf("compose project %s holds container %s, which serves live traffic in pool %s — refusing to touch it; give the colours distinct projects (--name) and compose files", r.project, c.Name, r.live)}
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
			return left, fmt.Errorf("not healthy within --timeout %s: %s", r.o.timeout, strings.Join(waiting, ", "))
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
			return apiError(err)
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
		logs, err := r.eng.LogTail(cctx, c.ID, r.o.logLines)
		if err != nil {
			r.step("logs of %s: %v", c.Name, err)
			continue
		}
		r.step("last %d log lines of %s (%s):", r.o.logLines, c.Name, c.Status)
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
	return &exitError{code: 1, err: fmt.Errorf("release of service %s into %s failed: %w", r.service, r.idle, cause)}
}

// retireOld keeps the old colour for rollback as long as asked, then
// stops its containers — unless it has become live again meanwhile.
func (r *releaser) retireOld(ctx context.Context, old string) error {
	if old == "" {
		return nil
	}
	if r.o.keep {
		r.step("%s keeps running for an instant `cutover rollback`; stop it when you no longer need it (or pass --keep-old)", old)
		return nil
	}
	if r.o.keepOld > 0 {
		r.step("keeping %s running for %s for an instant `cutover rollback`; then it is stopped (Ctrl-C leaves it running)", old, r.o.keepOld)
		if err := sleepCtx(ctx, r.o.keepOld); err != nil {
			r.step("interrupted: %s keeps running", old)
			return nil
		}
	}
	st, err := r.api.Status(ctx, r.service)
	if err != nil {
		return apiError(err)
	}
	svc := st.Services[0]
	if svc.Active == old || (svc.Operation != nil && svc.Operation.Pool == old) {
		r.step("%s is live again (or being deployed): not stopping it", old)
		return nil
	}
	names := map[string]bool{}
	for _, p := range svc.Pools {
		if p.Name == old {
			for _, t := range p.Targets {
				names[t.Label] = true
			}
		}
	}
	name := r.o.name
	if name == "" {
		name = r.service
	}
	cs, err := r.eng.ComposeContainers(ctx, name+"-"+old, nil)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.Running() {
			names[c.Name] = true
		}
	}
	var list []string
	for n := range names {
		list = append(list, n)
	}
	sort.Strings(list)
	if len(list) == 0 {
		r.step("%s has no running containers to stop", old)
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, len(list))
	for i, n := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.eng.Stop(ctx, n, nil)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return &exitError{code: 1, err: fmt.Errorf("the release is done, but stopping the old colour %s failed: %w", old, err)}
	}
	r.step("stopped %s: %s", old, strings.Join(list, ", "))
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

// composeCommand finds the compose tool: the override, else the Compose
// plugin (docker compose) when it answers, else docker-compose on PATH.
func composeCommand(ctx context.Context, override string) ([]string, error) {
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

// runCompose runs compose, copying its output indented.
func runCompose(ctx context.Context, compose, args, env []string, out io.Writer) error {
	cmd := exec.CommandContext(ctx, compose[0], append(compose[1:], args...)...)
	cmd.Env = env
	w := &prefixWriter{w: out, prefix: "    | "}
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	w.Flush()
	return err
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

// connectDocker connects to the engine: docker.host of the -c
// configuration if it sets one, else DOCKER_HOST, else the local socket.
func connectDocker(ctx context.Context, at adminTarget) (*docker.Engine, error) {
	host := ""
	if cfg := at.loadConfig(); cfg != nil {
		host = cfg.Docker.Host
	}
	return docker.Connect(ctx, host)
}

// loadConfig reads the -c configuration, or returns nil.
func (a *adminTarget) loadConfig() *config.Config {
	if a.config == "" {
		return nil
	}
	cfg, err := config.Load(a.config, os.LookupEnv)
	if err != nil {
		return nil
	}
	return cfg
}

// waitDockerMembers waits, up to the deploy's timeout, until a pool that
// follows Docker containers has at least one: right after `docker compose
// up` the containers are still starting (their HEALTHCHECK has not passed)
// and cutover gives them no traffic yet. Other pools return at once.
func waitDockerMembers(ctx context.Context, api *admin.Client, req admin.DeployRequest, out io.Writer) error {
	deadline := time.Now().Add(time.Duration(req.Timeout))
	said := false
	for {
		st, err := api.Status(ctx, req.Service)
		if err != nil || len(st.Services) != 1 {
			return nil // the deploy itself reports it
		}
		var pool *admin.PoolStatus
		for i := range st.Services[0].Pools {
			if st.Services[0].Pools[i].Name == req.Pool {
				pool = &st.Services[0].Pools[i]
			}
		}
		if pool == nil || pool.Source != admin.SourceDocker || len(pool.Targets) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return &exitError{code: 1, err: fmt.Errorf("pool %q of service %s has no running, healthy container on the network after %s — check them with docker ps, and cutover's log for the pool's problems; live traffic stays on %s",
				req.Pool, st.Services[0].Name, time.Duration(req.Timeout), orNone(st.Services[0].Active))}
		}
		if !said {
			fmt.Fprintf(out, "%s  waiting for the containers of pool %q: none runs healthy on the network yet\n", time.Now().Format("15:04:05.000"), req.Pool)
			said = true
		}
		if err := sleepCtx(ctx, releasePoll); err != nil {
			return err
		}
	}
}

// containerTargets resolves `deploy --container NAME[:PORT]` on the client
// side, through the Docker Engine the CLI reaches: each container's
// address on the network (--network, else docker.network of -c FILE, else
// the container's only network). The addresses are sent as targets, so the
// pool keeps them as given; pools that should follow their containers
// across restarts are declared in the configuration instead.
func containerTargets(ctx context.Context, at adminTarget, api *admin.Client, req admin.DeployRequest, refs []string, networkName string) ([]string, error) {
	st, err := api.Status(ctx, req.Service)
	if err != nil {
		return nil, apiError(err)
	}
	if len(st.Services) == 1 {
		for _, p := range st.Services[0].Pools {
			if p.Name == req.Pool && p.Source == admin.SourceDocker {
				return nil, &exitError{code: 2, err: fmt.Errorf("pool %q of service %s already follows its Docker containers from the configuration — deploy it without --container: cutover deploy %s", req.Pool, st.Services[0].Name, req.Pool)}
			}
		}
	}
	host := ""
	if cfg := at.loadConfig(); cfg != nil {
		host = cfg.Docker.Host
		if networkName == "" {
			networkName = cfg.Docker.Network
		}
	}
	eng, err := docker.Connect(ctx, host)
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	defer eng.Close()
	var out []string
	for _, ref := range refs {
		addr, _, err := eng.ContainerTarget(ctx, ref, networkName)
		if err != nil {
			return nil, &exitError{code: 2, err: fmt.Errorf("--container %s: %w", ref, err)}
		}
		out = append(out, addr)
	}
	return out, nil
}
