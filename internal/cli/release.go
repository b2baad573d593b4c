package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/human"
	"github.com/cutover/cutover/internal/provider/docker"
	"github.com/cutover/cutover/internal/release"
)

// memberPoll is how often deploy looks again for the containers of a
// Docker pool that has none yet.
const memberPoll = 100 * time.Millisecond

// newReleaseCmd builds `cutover release`, a thin front for release.Run.
func newReleaseCmd(s Streams) *cobra.Command {
	var (
		at adminTarget
		o  = release.Options{Pools: []string{"blue", "green"}, Timeout: release.DefaultTimeout, LogLines: 20}
		// The canary and guard flags, as deploy has them.
		tf trialFlags
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
  5. with --keep-old D, has cutover serve stop the old colour's containers D after the switch
     (scheduled with the switch, so it happens even if this command is interrupted; it returns
     at once, and 'cutover status' shows the time); a 'cutover rollback' before then keeps the
     old colour. --keep-old 0: right after the drain (release waits for it); not given: keep running.

When the idle colour is the warm rollback colour (the previous pool, still running), the release
is refused: it would replace the version a rollback returns to. --replace-previous allows it.

The colour's pool must follow Docker containers in cutover's configuration, e.g.
  green: {compose: {project: web-green, service: web}, port: 8000}
or, with a compose file per colour as in the seed (-f compose-{pool}.yaml),
  green: {containers: [my-green-server-1, my-green-server-2], port: 8000}

On failure (compose error, a container exits or turns unhealthy, cutover's checks fail) it prints
the last log lines of the failing containers (or compose's own error), removes the containers it
created, exits 1, and live traffic is untouched.`,
		Example: "  cutover release -s web -f compose.yaml --service web --image app:v2 --keep-old 10m\n" +
			"  cutover release -f compose.yaml --image app:v2 --canary 10,50 --step 1m --guard 5m\n" +
			"  cutover release -f compose.yaml --image app:v2 --preview      # then cutover promote\n" +
			"  cutover release --socket state/admin.sock -f compose-{pool}.yaml --image cutover/demo-app:v3",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Keep = !cmd.Flags().Changed("keep-old")
			if err := tf.apply(&o.Deploy); err != nil {
				return &exitError{code: 2, err: err}
			}
			if o.Deploy.Preview && len(o.Deploy.Canary) > 0 {
				return &exitError{code: 2, err: errors.New("--preview and --canary are two ways to try the new colour: give one of them")}
			}
			if len(o.Files) == 0 {
				return &exitError{code: 2, err: errors.New("release needs the compose file of the app: -f compose.yaml (repeatable; {pool} in a path is replaced by the colour)")}
			}
			if len(o.Pools) < 2 {
				return &exitError{code: 2, err: fmt.Errorf("--pools names %s; give at least two, e.g. --pools blue,green", human.Count(len(o.Pools), "colour"))}
			}
			c, err := at.client()
			if err != nil {
				return err
			}
			defer c.Close()
			err = release.Run(cmd.Context(), o, c, func(ctx context.Context) (*docker.Engine, error) { return connectDocker(ctx, at) }, s.Out)
			var ue *release.UsageError
			switch {
			case err == nil:
				return nil
			case errors.As(err, &ue):
				return &exitError{code: 2, err: err}
			}
			return apiError(err)
		},
	}
	f := cmd.Flags()
	tf.register(cmd)
	f.BoolVar(&o.Deploy.Preview, "preview", false, "send only the service's preview_hosts to the new colour; then cutover promote or abort")
	f.StringVarP(&o.Service, "cutover-service", "s", "", "cutover service to release (may be omitted when there is one)")
	f.StringArrayVarP(&o.Files, "file", "f", nil, "compose file (repeatable; {pool} is replaced by the colour)")
	f.StringArrayVar(&o.Compose, "service", nil, "compose service to release (repeatable; default: every service of the files)")
	f.StringVar(&o.Image, "image", "", "image for the released services (default: as the compose files say)")
	f.DurationVar(&o.KeepOld, "keep-old", 0, "have cutover serve stop the old colour this long after the switch (0: after the drain; not given: keep it running)")
	f.StringVar(&o.Name, "name", "", "compose project name prefix: the project is NAME-COLOUR (default: the service name)")
	f.StringSliceVar(&o.Pools, "pools", o.Pools, "the colours to alternate between")
	f.DurationVar(&o.Timeout, "timeout", o.Timeout, "how long the new colour may take to become healthy")
	f.StringVar(&o.Command, "compose", "", `compose command (default: "docker compose" if it works, else "docker-compose")`)
	f.BoolVar(&o.ReplacePrevious, "replace-previous", false, "release into the idle colour even while it is the warm rollback colour (its version is replaced)")
	at.register(cmd)
	return cmd
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
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(memberPoll):
		}
	}
}

// containerTargets resolves `deploy --container NAME[:PORT]` on the client
// side, through the Docker Engines the CLI reaches (every one of
// docker.hosts, the union): each container's
// address on the network (--network, else docker.network of -c FILE, else
// the container's only network). The addresses are sent as targets, so the
// pool keeps them as given; pools that should follow their containers
// across restarts are declared in the configuration instead.
func containerTargets(ctx context.Context, at adminTarget, api *admin.Client, req admin.DeployRequest, refs []string, networkName string, warn io.Writer) ([]string, error) {
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
	hosts := []string{""}
	if cfg := at.loadConfig(); cfg != nil {
		hosts = cfg.Docker.Engines()
		if networkName == "" {
			networkName = cfg.Docker.Network
		}
	}
	out, down, err := docker.ContainerTargets(ctx, hosts, refs, networkName)
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	for _, d := range down {
		fmt.Fprintf(warn, "warning: %v — the containers named by --container on it are left out\n", d)
	}
	return out, nil
}
