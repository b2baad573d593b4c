// Package docker is cutover's Docker provider: it keeps the pools whose
// members are Docker containers (a list of names or IDs, or every replica
// of a compose service) in step with the engine, on one Docker network.
//
// It talks to the Docker Engine API through Docker's Go SDK, at the address
// the usual DOCKER_HOST convention gives (default: the local socket), or at
// docker.host from the configuration, or at each of docker.hosts (the
// pools then take the containers of every engine together). It follows the engine's events, so a
// container that starts, stops, restarts with a new address, changes health
// or joins or leaves the network changes its pool within about a second:
//
//   - a container takes traffic only while it runs, is attached to the
//     network with an address, and its Docker HEALTHCHECK (if it has one)
//     says healthy — "starting" and "unhealthy" take no traffic;
//   - a container that is sent its stop signal (docker stop, compose down,
//     a recreate) leaves its pool at that moment, before its process exits,
//     so it gets no new request while those it is running finish (the
//     control plane drains removed targets up to the service's
//     drain_timeout);
//   - new members start unknown and take traffic once cutover's own health
//     checks pass.
//
// When cutover itself runs in a container on that network, containers can
// also be given as plain targets by name (my-blue-server-1:8000): Docker's
// embedded DNS resolves them at each new connection. That way needs no
// access to the engine, but does not see health or stop signals.
package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
)

// Compose labels, set by docker compose (v1 and v2) on every container.
const (
	LabelProject = "com.docker.compose.project"
	LabelService = "com.docker.compose.service"
	LabelOneOff  = "com.docker.compose.oneoff"
)

// Docker health states (State.Health.Status); "" means no HEALTHCHECK.
const (
	HealthNone      = ""
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// pingTimeout bounds the first contact with the engine.
const pingTimeout = 5 * time.Second

// Engine is a connection to a Docker Engine whose errors name the thing
// that is wrong and how to fix it.
type Engine struct {
	cli  *client.Client
	host string
}

// Connect opens a client for host ("" means DOCKER_HOST, else the local
// socket), negotiating the API version with the engine, and checks that
// the engine answers.
func Connect(ctx context.Context, host string) (*Engine, error) {
	e, err := open(host)
	if err != nil {
		return nil, err
	}
	if err := e.Ping(ctx); err != nil {
		e.cli.Close()
		return nil, err
	}
	return e, nil
}

// Ping checks that the engine answers.
func (e *Engine) Ping(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if _, err := e.cli.Ping(pctx); err != nil {
		return e.unreachable(err)
	}
	return nil
}

// open makes a client for host without contacting the engine.
func open(host string) (*Engine, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		where := host
		if where == "" {
			where = "DOCKER_HOST=" + os.Getenv(client.EnvOverrideHost)
		}
		return nil, fmt.Errorf("the Docker Engine address %s is not usable: %w — write e.g. unix:///var/run/docker.sock or tcp://127.0.0.1:2375", where, err)
	}
	return &Engine{cli: cli, host: cli.DaemonHost()}, nil
}

// unreachable explains an engine that does not answer.
func (e *Engine) unreachable(err error) error {
	hint := "start the Docker Engine, or point cutover at it with DOCKER_HOST (e.g. DOCKER_HOST=unix:///var/run/docker.sock or tcp://HOST:2375) or docker.host in the configuration; when cutover runs in a container, mount the socket: -v /var/run/docker.sock:/var/run/docker.sock"
	if strings.Contains(err.Error(), "permission denied") {
		hint = "run cutover as a user allowed to use the socket (root, or a member of the docker group), or point it at another engine with DOCKER_HOST or docker.host"
	}
	return &UnreachableError{Host: e.host, Err: err, Hint: hint}
}

// UnreachableError says that no Docker Engine answered.
type UnreachableError struct {
	Host string
	Err  error
	Hint string
}

func (u *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the Docker Engine at %s: %v — %s", u.Host, u.Err, u.Hint)
}

func (u *UnreachableError) Unwrap() error { return u.Err }

// Host is the engine address in use.
func (e *Engine) Host() string { return e.host }

// Client is the SDK client, for callers that need more than Engine offers.
func (e *Engine) Client() *client.Client { return e.cli }

// Close releases the client.
func (e *Engine) Close() error { return e.cli.Close() }

// wrap turns SDK errors into messages for people: a connection failure
// becomes an UnreachableError.
func (e *Engine) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	if client.IsErrConnectionFailed(err) {
		return e.unreachable(err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Network is a Docker network.
type Network struct {
	ID, Name string
}

// Network looks up a network by name or ID.
func (e *Engine) Network(ctx context.Context, nameOrID string) (Network, error) {
	n, err := e.cli.NetworkInspect(ctx, nameOrID, network.InspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return Network{}, fmt.Errorf("Docker network %q does not exist — create it (docker network create %s) or set docker.network to an existing network (docker network ls)", nameOrID, nameOrID)
		}
		return Network{}, e.wrap("inspect Docker network "+strconv.Quote(nameOrID), err)
	}
	return Network{ID: n.ID, Name: n.Name}, nil
}

// Endpoint is a container's attachment to a network.
type Endpoint struct {
	NetworkID string
	IP        string // "" while not yet assigned
}

// Container is what cutover needs to know of a container.
type Container struct {
	ID   string
	Name string // without the leading "/"
	// State is Docker's state: created, running, paused, restarting,
	// removing, exited or dead.
	State string
	// Status is Docker's text for people ("Up 3 minutes (healthy)").
	Status string
	// Health is the HEALTHCHECK state; HealthNone when there is no check.
	Health   string
	ExitCode int
	Labels   map[string]string
	// Networks by network name.
	Networks map[string]Endpoint
	// ExposedPorts are the container's exposed TCP ports (from Inspect).
	ExposedPorts []int
}

// Running reports whether the container's process runs (and is not paused).
func (c Container) Running() bool { return c.State == container.StateRunning }

// On returns the container's endpoint on the network.
func (c Container) On(n Network) (Endpoint, bool) {
	if ep, ok := c.Networks[n.Name]; ok {
		return ep, true
	}
	for _, ep := range c.Networks {
		if ep.NetworkID != "" && ep.NetworkID == n.ID {
			return ep, true
		}
	}
	return Endpoint{}, false
}

// NetworkNames lists the networks the container is attached to, sorted.
func (c Container) NetworkNames() []string {
	names := make([]string, 0, len(c.Networks))
	for n := range c.Networks {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Compose returns the compose project and service of the container
// ("" when it was not made by compose).
func (c Container) Compose() (project, service string) {
	return c.Labels[LabelProject], c.Labels[LabelService]
}

func fromSummary(s container.Summary) Container {
	c := Container{ID: s.ID, State: s.State, Status: s.Status, Labels: s.Labels, Networks: map[string]Endpoint{}}
	if len(s.Names) > 0 {
		c.Name = strings.TrimPrefix(s.Names[0], "/")
	}
	if s.NetworkSettings != nil {
		for name, ep := range s.NetworkSettings.Networks {
			if ep != nil {
				c.Networks[name] = Endpoint{NetworkID: ep.NetworkID, IP: endpointIP(ep)}
			}
		}
	}
	return c
}

func endpointIP(ep *network.EndpointSettings) string {
	if ep.IPAddress != "" {
		return ep.IPAddress
	}
	return ep.GlobalIPv6Address
}

func fromInspect(r container.InspectResponse) Container {
	c := Container{ID: r.ID, Name: strings.TrimPrefix(r.Name, "/"), Networks: map[string]Endpoint{}}
	if r.State != nil {
		c.State = r.State.Status
		c.ExitCode = r.State.ExitCode
		if r.State.Health != nil {
			c.Health = r.State.Health.Status
			if c.Health == "none" {
				c.Health = HealthNone
			}
		}
		c.Status = describeState(r.State)
	}
	if r.Config != nil {
		c.Labels = r.Config.Labels
		for p := range r.Config.ExposedPorts {
			if p.Proto() == "tcp" {
				c.ExposedPorts = append(c.ExposedPorts, p.Int())
			}
		}
		sort.Ints(c.ExposedPorts)
	}
	if r.NetworkSettings != nil {
		for name, ep := range r.NetworkSettings.Networks {
			if ep != nil {
				c.Networks[name] = Endpoint{NetworkID: ep.NetworkID, IP: endpointIP(ep)}
			}
		}
	}
	return c
}

func describeState(s *container.State) string {
	switch {
	case s.Running && s.Health != nil && s.Health.Status != "" && s.Health.Status != "none":
		return "running (" + s.Health.Status + ")"
	case s.Running:
		return "running"
	case s.Status == container.StateExited:
		return fmt.Sprintf("exited with code %d", s.ExitCode)
	}
	return s.Status
}

// Inspect returns one container by name or ID.
func (e *Engine) Inspect(ctx context.Context, nameOrID string) (Container, error) {
	r, err := e.cli.ContainerInspect(ctx, nameOrID)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return Container{}, &MissingError{Name: nameOrID}
		}
		return Container{}, e.wrap("inspect container "+strconv.Quote(nameOrID), err)
	}
	return fromInspect(r), nil
}

// MissingError says that no container has the name or ID.
type MissingError struct{ Name string }

func (m *MissingError) Error() string {
	return fmt.Sprintf("no container %q exists — check the name with docker ps -a, or start it first", m.Name)
}

// List returns every container (running or not), with the health of those
// whose HEALTHCHECK is not passing yet or failing. One call lists them; a
// second finds those that Docker's health check does not pass.
func (e *Engine) List(ctx context.Context, f filters.Args) ([]Container, error) {
	all, err := e.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, e.wrap("list containers", err)
	}
	health := map[string]string{}
	for _, state := range []string{HealthStarting, HealthUnhealthy} {
		hf := f.Clone()
		hf.Add("health", state)
		list, err := e.cli.ContainerList(ctx, container.ListOptions{Filters: hf})
		if err != nil {
			return nil, e.wrap("list containers by health", err)
		}
		for _, s := range list {
			health[s.ID] = state
		}
	}
	out := make([]Container, 0, len(all))
	for _, s := range all {
		c := fromSummary(s)
		c.Health = health[s.ID]
		out = append(out, c)
	}
	return out, nil
}

// ComposeContainers returns the containers of a compose project (every
// service when services is empty), one-off containers (compose run)
// excluded, inspected so their health and exit codes are known; sorted
// by name.
func (e *Engine) ComposeContainers(ctx context.Context, project string, services []string) ([]Container, error) {
	list, err := e.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelProject+"="+project))})
	if err != nil {
		return nil, e.wrap("list containers of compose project "+strconv.Quote(project), err)
	}
	var out []Container
	for _, s := range list {
		if s.Labels[LabelOneOff] == "True" {
			continue
		}
		if len(services) > 0 && !contains(services, s.Labels[LabelService]) {
			continue
		}
		c, err := e.Inspect(ctx, s.ID)
		if err != nil {
			var m *MissingError
			if errors.As(err, &m) {
				continue // removed between the list and the inspect
			}
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Addr is the host:port of a container on a network. It says why when
// there is none.
func Addr(c Container, n Network, port int) (string, error) {
	ep, ok := c.On(n)
	switch {
	case !ok:
		on := strings.Join(c.NetworkNames(), ", ")
		if on == "" {
			on = "none"
		}
		return "", fmt.Errorf("container %q is not attached to network %q (it is on: %s) — connect it: docker network connect %s %s, or add the network to its compose file",
			c.Name, n.Name, on, n.Name, c.Name)
	case ep.IP == "":
		return "", fmt.Errorf("container %q has no address on network %q yet (state %s)", c.Name, n.Name, c.State)
	}
	return net.JoinHostPort(ep.IP, strconv.Itoa(port)), nil
}

// ContainerTarget resolves NAME[:PORT] to the container's address on a
// network. Without a port, the container's one exposed TCP port is used.
// An empty network means the container's only network.
func (e *Engine) ContainerTarget(ctx context.Context, ref, networkName string) (addr, name string, err error) {
	nameOrID, port, err := splitContainerRef(ref)
	if err != nil {
		return "", "", err
	}
	c, err := e.Inspect(ctx, nameOrID)
	if err != nil {
		return "", "", err
	}
	if !c.Running() {
		return "", "", fmt.Errorf("container %q is %s, not running — start it first (docker start %s)", c.Name, c.Status, c.Name)
	}
	if port == 0 {
		switch len(c.ExposedPorts) {
		case 1:
			port = c.ExposedPorts[0]
		case 0:
			return "", "", fmt.Errorf("no port known for container %q: its image exposes none — give it as %s:PORT", c.Name, nameOrID)
		default:
			return "", "", fmt.Errorf("no port known for container %q: it exposes several (%s) — give the one to use as %s:PORT", c.Name, joinInts(c.ExposedPorts), nameOrID)
		}
	}
	var n Network
	if networkName == "" {
		names := c.NetworkNames()
		if len(names) != 1 {
			return "", "", fmt.Errorf("container %q is on %d networks (%s) — say which one cutover reaches it on with --network NAME (or docker.network in the configuration given with -c)",
				c.Name, len(names), strings.Join(names, ", "))
		}
		networkName = names[0]
	}
	if n, err = e.Network(ctx, networkName); err != nil {
		return "", "", err
	}
	if addr, err = Addr(c, n, port); err != nil {
		return "", "", err
	}
	return addr, c.Name, nil
}

func splitContainerRef(ref string) (string, int, error) {
	name, p, hasPort := strings.Cut(ref, ":")
	if name == "" {
		return "", 0, fmt.Errorf("container %q has no name — write NAME:PORT, e.g. my-green-server-1:8000", ref)
	}
	if !hasPort {
		return name, 0, nil
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("container %q has port %q, which is not a number from 1 to 65535 — write NAME:PORT, e.g. %s:8000", ref, p, name)
	}
	return name, port, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// LogTail returns the last lines of a container's output (stdout and
// stderr interleaved as Docker stored them).
func (e *Engine) LogTail(ctx context.Context, nameOrID string, lines int) (string, error) {
	rc, err := e.cli.ContainerLogs(ctx, nameOrID, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(lines)})
	if err != nil {
		return "", e.wrap("read the logs of container "+strconv.Quote(nameOrID), err)
	}
	defer rc.Close()
	var b strings.Builder
	// Containers without a TTY have multiplexed logs; both streams go to
	// one writer so their order is kept.
	if _, err := stdcopy.StdCopy(&b, &b, io.LimitReader(rc, 1<<20)); err != nil {
		return b.String(), e.wrap("read the logs of container "+strconv.Quote(nameOrID), err)
	}
	return b.String(), nil
}

// Stop stops a container, giving it timeout to exit after its stop signal
// (nil: the container's own stop timeout).
func (e *Engine) Stop(ctx context.Context, nameOrID string, timeout *time.Duration) error {
	var opts container.StopOptions
	if timeout != nil {
		s := int(timeout.Seconds())
		opts.Timeout = &s
	}
	return e.wrap("stop container "+strconv.Quote(nameOrID), e.cli.ContainerStop(ctx, nameOrID, opts))
}

// Remove removes a container, stopping it first if it runs.
func (e *Engine) Remove(ctx context.Context, nameOrID string) error {
	err := e.cli.ContainerRemove(ctx, nameOrID, container.RemoveOptions{Force: true})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	return e.wrap("remove container "+strconv.Quote(nameOrID), err)
}
