package cli

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/human"
	"github.com/spf13/cobra"
)

// newDeployCmd builds `cutover deploy`. Flags bind straight into the
// request sent to the admin API.
func newDeployCmd(s Streams) *cobra.Command {
	var (
		at  adminTarget
		et  etcdTarget
		req = admin.DeployRequest{Timeout: admin.Duration(admin.DefaultTimeout)}
		// --container NAME[:PORT] is resolved here, through the Docker
		// Engine, to addresses on --network (see containerTargets).
		containers []string
		network    string
		// The canary and guard flags, checked and bound into req by
		// trialFlags.apply.
		tf trialFlags
	)
	cmd := &cobra.Command{
		Use:   "deploy POOL [-s SERVICE] [--target HOST:PORT]... [--timeout 60s]",
		Short: "Health-check a pool, switch the service to it atomically, and drain the old pool",
		Long: "deploy makes POOL the live pool of a service. With --target, POOL's targets are set first\n" +
			"(a new pool name creates the pool). Every target of POOL is then health-checked afresh until\n" +
			"each passes health.healthy consecutive checks; the service switches to POOL in one atomic\n" +
			"step; requests still running on the old pool finish there (up to drain_timeout). The old\n" +
			"pool stays warm for `cutover rollback`.\n\n" +
			"If a target is not healthy within --timeout, nothing is switched and deploy exits 1, naming\n" +
			"each failing target and its last check error. Deploying the active pool does nothing.\n\n" +
			"With --etcd ENDPOINTS (cutovers sharing store.etcd) the command talks to etcd itself rather\n" +
			"than to one instance: it takes the service's deploy lock, every live instance health-checks\n" +
			"POOL itself and reports (the command shows which instance waits for which target), and once\n" +
			"all are ready the switch is one compare-and-swap on the service's key that every instance\n" +
			"applies through its watch. A held lock, an unreachable etcd, an unknown service or pool, or\n" +
			"an instance not ready within --timeout refuses it and changes nothing. -c FILE gives the\n" +
			"TLS files and user (store.etcd) and the active pool of a service not switched yet.",
		Example: "  cutover deploy green                       # deploy.sh dp\n" +
			"  cutover deploy blue                        # deploy.sh in / the next release\n" +
			"  cutover deploy green --target 10.0.0.7:8000 --target 10.0.0.8:8000\n" +
			"  cutover deploy green --container my-green-server-1:8000 --container my-green-server-2:8000\n" +
			"  cutover deploy green --canary 10,50 --step 1m --guard 5m   # 10%, 50%, then all; rolled back on a breach\n" +
			"  cutover deploy green --canary 10                          # holds at 10% until cutover promote / abort\n" +
			"  cutover deploy green --preview                            # preview_hosts only; then cutover promote / abort\n" +
			"  cutover deploy green --etcd https://10.0.0.5:2379,https://10.0.0.6:2379 -c cutover.yaml   # every instance at once",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &exitError{code: 2, err: fmt.Errorf("deploy needs exactly one pool name, got %d — e.g. cutover deploy green", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Pool = args[0]
			if err := tf.apply(&req); err != nil {
				return &exitError{code: 2, err: err}
			}
			if et.endpoints != "" {
				if len(containers) > 0 {
					return &exitError{code: 2, err: errors.New("--container is resolved through an instance's Docker engine: with --etcd give the addresses with --target HOST:PORT")}
				}
				r, err := et.open(cmd, at)
				if err != nil {
					return err
				}
				defer r.Close()
				res, err := r.Deploy(cmd.Context(), req, printEvent(s.Out))
				return printOutcome(s.Out, res, err)
			}
			c, err := at.client()
			if err != nil {
				return err
			}
			defer c.Close()
			if len(containers) > 0 {
				addrs, err := containerTargets(cmd.Context(), at, c, req, containers, network, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				req.Targets = append(req.Targets, addrs...)
			} else if len(req.Targets) == 0 {
				// A pool of containers that are still starting has no
				// targets yet: wait for them rather than refuse.
				if err := waitDockerMembers(cmd.Context(), c, req, s.Out); err != nil {
					return err
				}
			}
			if req.Expect == "" {
				req.Expect = liveNow(cmd.Context(), c, req.Service)
			}
			res, err := c.Deploy(cmd.Context(), req, printEvent(s.Out))
			return printOutcome(s.Out, res, err)
		},
	}
	f := cmd.Flags()
	tf.register(cmd)
	f.StringVarP(&req.Service, "service", "s", "", "service to deploy (may be omitted when there is one)")
	f.StringArrayVar(&req.Targets, "target", nil, "set POOL's targets first (HOST:PORT, repeatable)")
	f.StringArrayVar(&containers, "container", nil, "set POOL's targets first from Docker containers (NAME[:PORT], repeatable; resolved once, on --network)")
	f.StringVar(&network, "network", "", "Docker network for --container (default: docker.network of -c FILE, else the container's only network)")
	f.DurationVar((*time.Duration)(&req.Timeout), "timeout", admin.DefaultTimeout, "how long every target may take to become healthy")
	f.BoolVar(&req.Preview, "preview", false, "health-gate POOL and send only the service's preview_hosts to it; live traffic stays (then cutover promote or abort)")
	f.StringVar(&req.Expect, "expect", "", "refuse unless this pool is active when the deploy switches (default: the pool status shows active now)")
	at.register(cmd)
	et.register(cmd)
	return cmd
}

// printOutcome prints the result of a deploy, rollback, promote or abort,
// or gives its error an exit code.
func printOutcome(out io.Writer, res *admin.DeployResult, err error) error {
	if err != nil {
		printGuardError(out, err)
		return apiError(err)
	}
	printResult(out, res)
	return nil
}

// printEvent prints progress as it arrives.
func printEvent(out io.Writer) func(admin.Event) {
	return func(ev admin.Event) {
		fmt.Fprintf(out, "%s  %s\n", ev.Time.Local().Format("15:04:05.000"), ev.Message)
	}
}

// printResult prints a deploy or rollback summary.
func printResult(out io.Writer, res *admin.DeployResult) {
	if len(res.AppliedBy) > 0 || res.Revision > 0 {
		// Committed to etcd by this command: each instance drains on
		// its own, so there are no drain numbers here.
		fmt.Fprintln(out, res.Message)
		for _, w := range res.Warnings {
			fmt.Fprintf(out, "warning: %s\n", w)
		}
		return
	}
	if res.NoOp || res.Canary > 0 || res.Preview != "" || res.Operation == admin.OpAbort || (res.Operation == admin.OpPromote && res.From == "") {
		fmt.Fprintln(out, res.Message)
		printGuard(out, res.Guard)
		return
	}
	fmt.Fprintf(out, "%s done: service %s switched from %s to %s\n", res.Operation, res.Service, orNone(res.From), res.Pool)
	fmt.Fprintf(out, "  time to healthy:      %s\n", human.Duration(time.Duration(res.TimeToHealthy)))
	fmt.Fprintf(out, "  in flight at switch:  %d\n", res.InFlightAtSwitch)
	fmt.Fprintf(out, "  drained:              %d\n", res.Drained)
	if res.ClosedAtTimeout > 0 {
		fmt.Fprintf(out, "  closed at timeout:    %d (over %s)\n", res.ClosedAtTimeout, human.Count(res.ConnsClosed, "upstream connection"))
	}
	fmt.Fprintf(out, "  time to drain:        %s\n", human.Duration(time.Duration(res.TimeToDrain)))
	for _, w := range res.Warnings {
		fmt.Fprintf(out, "warning: %s\n", w)
	}
	printGuard(out, res.Guard)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
